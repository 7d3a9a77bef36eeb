"""What is measured for each benchmark (`benchmarks.py` names them).

Each benchmark builds one model and measures, in this process:

* training throughput: a `tf.function` step (negative ELBO, gradients, Adam)
  timed after warm-up; images (or points) per second from the median step;
* peak resident memory after training (`ru_maxrss`), and the RSS before it;
* sampling: wall time of 64 samples (traced beforehand), the maximum latent
  error of the numerical inverse (`|p^-1(p(eps)) - eps|`) and the mixture
  root-finder's mean and maximum iterations per element;
* importance-weighted scoring throughput at S = 16 and S = 128.

A baseline (TFP's `tfb.Glow`) is measured with the same training step. The
functions here read no flags; `bench/run.py` is the command line.
"""

import functools
import math
import resource
import statistics
import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vflow_tfp import bijectors as vb
from vflow_tfp import training
from vflow_tfp.models import presets

tfb, tfd = tfp.bijectors, tfp.distributions

SAMPLES = 64
IW_SAMPLES = (16, 128)


def _tfp_glow(image_shape, levels, steps, filters):
    """TFP's `tfb.Glow` (no factor-out, as our `glow_cifar10`) as a
    distribution over dequantised pixels in [0, 1]."""
    glow = tfb.Glow(
        output_shape=image_shape, num_glow_blocks=levels,
        num_steps_per_block=steps,
        coupling_bijector_fn=functools.partial(tfb.GlowDefaultNetwork,
                                               num_hidden=filters),
        exit_bijector_fn=tfb.GlowDefaultExitNetwork,
        grab_after_block=(0.0,) * levels)
    base = tfd.Sample(tfd.Normal(0.0, 1.0),
                      glow.inverse_event_shape(image_shape))
    return tfd.TransformedDistribution(base, glow)


# The TFP baselines by the name a `Benchmark.tfp_model` gives; each takes the
# benchmark's overrides.
TFP_MODELS = {'tfp_glow': functools.partial(_tfp_glow, (32, 32, 3))}


def _rss_mb():
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _compute_device():
    """The device the models run on: the first GPU if any, else the CPU."""
    return 'GPU:0' if tf.config.list_logical_devices('GPU') else 'CPU:0'


def _tensor_memory():
    """TensorFlow's own count of live tensor bytes on the compute device,
    `(current, peak)`; `None` where it is not kept (a CPU needs the BFC
    allocator, which `bench/run.py` turns on: `TF_CPU_ALLOCATOR_USE_BFC`)."""
    try:
        info = tf.config.experimental.get_memory_info(_compute_device())
    except ValueError:
        return None
    return info['current'], info['peak']


def _current_rss_mb():
    with open('/proc/self/statm') as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        tf.nest.map_structure(lambda t: t.numpy(), out)
        times.append(time.perf_counter() - start)
    return times


def _data(model, batch_size, seed=0):
    """Real-looking inputs: photo patches for images, checkerboard points."""
    if model.data_shape == (2,):
        # pylint: disable-next=g-import-not-at-top
        from vflow_tfp.data import checkerboard
        return tf.constant(checkerboard.sample_checkerboard(batch_size,
                                                            seed=seed),
                           tf.float32)
    from vflow_tfp.data import photos  # pylint: disable=g-import-not-at-top
    height, width, _ = model.data_shape
    patches = photos.photo_patches(height, split='train')
    picks = np.random.RandomState(seed).choice(len(patches), batch_size)
    return tf.constant(patches[picks], tf.uint8)


def graph_flops(concrete_function):
    """Floating-point operations of one call, from TF's per-op statistics
    (matmuls, convolutions and the elementwise ops TF counts)."""
    # pylint: disable-next=g-import-not-at-top
    from tensorflow.python.profiler import model_analyzer
    # pylint: disable-next=g-import-not-at-top
    from tensorflow.python.profiler import option_builder
    options = option_builder.ProfileOptionBuilder.float_operation()
    options['output'] = 'none'
    return int(model_analyzer.profile(concrete_function.graph,
                                      options=options).total_float_ops)


def peak_matmul_flops(size=2048, chain=8, repeats=5):
    """float32 FLOP/s of large matrix products on this machine."""
    a = tf.random.normal([size, size], stddev=size**-0.5)

    @tf.function(autograph=False)
    def products(a):
        # A chain of products, one element read back: nothing to simplify
        # away and little to copy.
        b = a
        for _ in range(chain):
            b = tf.matmul(b, a)
        return b[0, 0]
    products(a).numpy()
    return chain * 2 * size**3 / min(_timed(lambda: products(a), repeats))


def train_throughput(loss_fn, variables, batch, steps, jit_compile):
    """Measures Adam steps of `loss_fn(batch, seed)`.

    Returns a dict: median seconds per step, seconds of the first call
    (tracing), the step's FLOPs, and (with the BFC allocator) the peak of
    live tensor memory during a step and how much of it the step itself
    allocates (activations and temporaries, beyond weights and Adam slots).
    """
    # With `jit_compile`, the update is compiled with the rest of the step.
    optimizer = training.adam(1e-4)
    optimizer.build(variables)

    # Traced as the Trainer traces its step (without autograph).
    @tf.function(jit_compile=jit_compile, autograph=False)
    def step(x, seed):
        with tf.GradientTape() as tape:
            loss = loss_fn(x, seed)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    seeds = iter(range(10**6))
    # The trace happens when the FLOPs are counted; the first call reuses
    # it, so both are timed (the counting itself is not).
    start = time.perf_counter()
    concrete = step.get_concrete_function(batch, tf.constant([0, 0]))
    trace_seconds = time.perf_counter() - start
    flops = graph_flops(concrete)
    start = time.perf_counter()
    step(batch, tf.constant([0, next(seeds)])).numpy()
    trace_seconds += time.perf_counter() - start
    step(batch, tf.constant([0, next(seeds)])).numpy()  # warm-up
    memory = _tensor_memory()
    if memory is not None:
        tf.config.experimental.reset_memory_stats(_compute_device())
    times = _timed(lambda: step(batch, tf.constant([0, next(seeds)])), steps)
    peak_memory = step_memory = None
    if memory is not None:
        peak_memory = _tensor_memory()[1] / 2**20
        step_memory = peak_memory - memory[0] / 2**20
    loss = float(step(batch, tf.constant([0, next(seeds)])).numpy())
    if not math.isfinite(loss):
        raise FloatingPointError(f'non-finite training loss {loss}')
    return dict(step_seconds=statistics.median(times),
                trace_seconds=trace_seconds, step_flops=flops,
                tensor_peak_mb=peak_memory, step_memory_mb=step_memory)


def _p_layers_forward_order(model):
    """The layers of p from latent to data (the order `forward` runs)."""
    layers = []

    def flatten(bijector):
        # tfb.Chain(...) builds a `_Chain`; both carry `.bijectors`.
        if isinstance(bijector, tfb.Composition) and hasattr(bijector,
                                                             'bijectors'):
            for b in reversed(bijector.bijectors):
                flatten(b)
        else:
            layers.append(bijector)
    flatten(model.p_bijector)
    return layers


def sampling_stats(model, data, num=SAMPLES):
    """Sampling wall time, inverse error and root-finder iterations.

    The inverse is checked where it is defined: the latents of real data
    (`h = p^-1([x~, z])`, then `p(h)` layer by layer, recording every
    mixture coupling's root-finder iterations per element); the error is
    `max |p(h) - [x~, z]|`. (A VFlow coupling's image is bounded, so a
    Gaussian latent may have no preimage; `sample` clamps those.)
    """
    sample = tf.function(lambda seed: model.sample(num, seed=seed),
                         autograph=False)
    sample(tf.constant([1, 2])).numpy()
    seconds = statistics.median(
        _timed(lambda: sample(tf.constant([3, 4])), 3))

    @tf.function(autograph=False)
    def round_trip(x):
        # pylint: disable-next=protected-access
        xz, _ = model._joint(x, tf.constant([5, 6]), False)
        h = model.p_bijector.inverse(
            xz, **vb.chain_kwargs(model.p_bijector, training=False))
        # A new tensor, so TFP's bijector cache cannot answer the walk.
        h = tf.identity(h)
        iterations = [tf.zeros([0], tf.int32)]
        for layer in _p_layers_forward_order(model):
            kwargs = {}
            if isinstance(layer, vb.Coupling):
                kwargs = dict(training=False)
            if isinstance(layer, vb.MixLogisticCoupling):
                iterations.append(tf.reshape(layer.inverse_iterations(h),
                                             [-1]))
            h = layer.forward(h, **kwargs)
        return tf.reduce_max(tf.abs(h - xz)), tf.concat(iterations, 0)

    error, iterations = round_trip(data)
    iterations = iterations.numpy()
    return dict(
        sample_seconds=seconds,
        inverse_max_error=float(error),
        inverse_mean_iterations=(float(iterations.mean())
                                 if iterations.size else None),
        inverse_max_iterations=(int(iterations.max())
                                if iterations.size else None))


def scoring_throughput(model, data, num_samples, per_example=False):
    """Images per second of `log_prob(x, num_samples)` on `data`.

    With `per_example`, as the exported signatures score: every example
    draws its noise from its own seed (`model.example_seeds`), which costs
    a row-by-row draw of the noise.
    """
    if per_example:
        def log_prob(x, seed):
            return model.log_prob(x, num_samples,
                                  seed=model.example_seeds(x, seed))
    else:
        def log_prob(x, seed):
            return model.log_prob(x, num_samples, seed=seed)
    score = tf.function(log_prob, autograph=False)
    score(data, tf.constant([1, 2])).numpy()
    seconds = statistics.median(
        _timed(lambda: score(data, tf.constant([3, 4])), 3))
    return len(data) / seconds


def run(benchmark, steps=10, jit_compile=False, sampling=True, scoring=True):
    """Measures `benchmark` (a `benchmarks.Benchmark`); returns a dict of
    figures."""
    tf.random.set_seed(0)
    result = dict(name=benchmark.name, description=benchmark.description,
                  batch_size=benchmark.batch_size, jit_compile=jit_compile,
                  steps=steps)
    if benchmark.tfp_model is not None:
        dist = TFP_MODELS[benchmark.tfp_model](**benchmark.overrides)
        shape = tuple(dist.event_shape.as_list())
        batch = tf.random.uniform((benchmark.batch_size,) + shape,
                                  seed=0) * 255.0

        def loss_fn(x, seed):
            noise = tf.random.stateless_uniform(tf.shape(x), seed)
            return -tf.reduce_mean(dist.log_prob((x + noise) / 256.0))
        loss_fn(batch, tf.constant([0, 0]))  # creates the Keras networks
        variables = dist.trainable_variables
        result['parameters'] = int(sum(np.prod(v.shape) for v in variables))
        result['rss_before_mb'] = _current_rss_mb()
        train = train_throughput(loss_fn, variables, batch, steps,
                                 jit_compile)
    else:
        model = presets.build(benchmark.preset, seed=0, **benchmark.overrides)
        batch = _data(model, benchmark.batch_size)
        model.initialize(batch, seed=tf.constant([0, 1]))
        variables = model.trainable_variables
        result['parameters'] = model.count_params()
        result['rss_before_mb'] = _current_rss_mb()

        def loss_fn(x, seed):
            return -tf.reduce_mean(model.elbo(
                x, training=True, seed=seed,
                gradient_estimator=benchmark.gradient_estimator,
                draws_per_row=benchmark.draws))
        train = train_throughput(loss_fn, variables, batch, steps,
                                 jit_compile)
    seconds = train['step_seconds']
    result.update(
        step_seconds=seconds, trace_seconds=train['trace_seconds'],
        train_per_second=benchmark.batch_size / seconds,
        peak_rss_mb=_rss_mb(),
        train_gflop_per_item=train['step_flops'] / benchmark.batch_size / 1e9,
        achieved_gflops=train['step_flops'] / seconds / 1e9,
        tensor_peak_mb=train['tensor_peak_mb'],
        step_memory_mb=train['step_memory_mb'],
        train_mb_per_image=(None if train['step_memory_mb'] is None else
                            train['step_memory_mb'] / benchmark.batch_size))
    if benchmark.tfp_model is not None or benchmark.train_only:
        return result
    data = _data(model, benchmark.iw_images, seed=1)
    if sampling:
        result.update(sampling_stats(model, data[:SAMPLES]))
    if scoring:
        for s in IW_SAMPLES:
            result[f'score_per_second_s{s}'] = scoring_throughput(model, data,
                                                                  s)
        result['score_per_second_s16_per_example'] = scoring_throughput(
            model, data, 16, per_example=True)
    return result
