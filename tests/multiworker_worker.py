"""One worker of the multi-worker test: trains a few steps, dumps variables.

```
python multiworker_worker.py OUTPUT_DIR DUMP.npz [TRAIN_STEPS [SIGTERM_AFTER]]
```
with TF_CONFIG set (TRAIN_STEPS defaults to 6; a rerun with more resumes).
With SIGTERM_AFTER > 0 the worker sends itself SIGTERM after that many
training steps, as a preempted machine would get. Uses
`MultiWorkerMirroredStrategy` through the library's `Trainer`.
"""

import os
import signal
import sys

import numpy as np
import tensorflow as tf

from vflow_tfp import training


def main(output_dir, dump_path, train_steps=6, sigterm_after=0):
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    inputs = training.training_inputs('checkerboard', 16, init_batch_size=256,
                                      seed=5)
    config = training.TrainConfig(
        preset='checkerboard_vflow_3_4', output_dir=output_dir,
        dataset='checkerboard', global_batch_size=16,
        train_steps=int(train_steps),
        max_lr=1e-3, warmup_steps=0, checkpoint_every=3, eval_every=6,
        log_every=3, num_samples=0, iw_samples=2, iw_images=40, seed=5)
    trainer = training.Trainer(config, strategy, inputs.train_input_fn,
                               inputs.eval_input_fn, inputs.init_batch)
    if int(sigterm_after):
        train_step, calls = trainer._train_step, []

        def preempted_step(*args):
            outputs = train_step(*args)
            calls.append(None)
            if len(calls) == int(sigterm_after):
                os.kill(os.getpid(), signal.SIGTERM)
            return outputs

        trainer._train_step = preempted_step
    results = trainer.train()
    # One pass over the 1,000 test points, split between the workers in
    # shards of 500 and batches of 8 per replica (the last one partial).
    figures = {key: results[key] for key in ('test_bpd', 'test_images',
                                             'test_bpd_iw', 'iw_images')
               if key in results}
    np.savez(dump_path, step=results['step'],
             start=trainer.restore_or_initialize(), **figures,
             latest_checkpoint=results['latest_checkpoint'],
             **{f'v{i}': v.numpy() for i, v in enumerate(trainer.variables)},
             **{f'ema{i}': s.numpy()
                for i, s in enumerate(trainer.ema.shadows)})


if __name__ == '__main__':
    main(*sys.argv[1:])
