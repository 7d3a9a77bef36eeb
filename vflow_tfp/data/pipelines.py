"""`tf.data` input pipelines for training: TFDS images and the checkerboard.

`image_dataset` returns batches of uint8 images `[B, H, W, C]` from a TFDS
data set (CIFAR-10, downsampled ImageNet, MNIST, the offline `photo_patches`
or any TFDS data set with an 'image' feature). `batch_size` is always the
**global** batch. Under `tf.distribute`, build the pipelines with
`distributed_image_dataset` (or pass the `input_context` of
`strategy.distribute_datasets_from_function` to `image_dataset`): every input
pipeline then keeps its own shard of the examples, so one epoch shows each
example once across all replicas and workers. (The official Flow++/VFlow code
let every worker walk the whole training set: SPEC §3, §9.10.) A split stored
in at least as many files as there are pipelines is split by file, so each
pipeline reads only its own files; otherwise each reads all of them and keeps
every N-th example, before decoding.

```python
strategy = tf.distribute.MirroredStrategy()
train = vflow_tfp.data.distributed_image_dataset(
    strategy, 'cifar10', 'train', 64, seed=1, validation_size=10_000)
for x in train:  # Per replica: uint8 [64 / replicas, 32, 32, 3].
    strategy.run(train_step, args=(x,))
```

`validation_size=N` holds out the last N training images as a validation
split (the paper's §6.2 hold-out of 10,000 CIFAR-10 training images; the
official code monitored the test set instead: SPEC §9.11).
"""

import contextlib
import re
import shutil
import socket
import tempfile
import time
import urllib.parse
import urllib.request

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vflow_tfp.data import photo_patches_dataset

# Registers the `photo_patches` builder with TFDS.
del photo_patches_dataset

try:  # TFDS's HTTP downloader, for its retry count: _no_retries_if_offline.
    from tensorflow_datasets.core.download import (
        downloader as _tfds_downloader)
except ImportError:  # Another TFDS layout: its retries stay as they are.
    _tfds_downloader = None

__all__ = [
    'DatasetUnavailableError',
    'SPLITS',
    'SUPPORTED_DATASETS',
    'checkerboard_dataset',
    'distributed_image_dataset',
    'image_dataset',
    'image_shape',
    'is_prepared',
]


class DatasetUnavailableError(RuntimeError):
    """A TFDS data set is not prepared and preparing it failed.

    Usually there is no network access to download it: prepare it on a
    machine that has (e.g. `tfds build cifar10 --data_dir=DIR`) and pass
    `data_dir=DIR`. The message names the data set, the directory and the
    cause; the original exception is chained as `__cause__`.
    """


SUPPORTED_DATASETS = (
    'cifar10',
    'downsampled_imagenet/32x32',
    'downsampled_imagenet/64x64',
    'mnist',
    'photo_patches/8x8',
    'photo_patches/16x16',
    'photo_patches/32x32',
)

SPLITS = ('train', 'validation', 'test')

# The splits of the supported data sets, which TFDS only lists once a data
# set is prepared.
_KNOWN_SPLITS = {
    'cifar10': ('train', 'test'),
    'downsampled_imagenet': ('train', 'validation'),
    'mnist': ('train', 'test'),
    'photo_patches': ('train', 'test'),
}
# The TFDS split that serves as 'test' where it is not called 'test':
# downsampled ImageNet results are reported on ImageNet's validation set.
_TEST_SPLITS = {'downsampled_imagenet': 'validation'}


def image_shape(name, data_dir=None):
    """The image shape `(H, W, C)` of the TFDS data set `name`.

    Read from the builder's metadata: no download or preparation needed for
    registered data sets. For data sets whose TFDS feature has no fixed size
    (downsampled ImageNet), the size comes from a config named `'HxW'`.

    Args:
      name: TFDS name, optionally with config and version, e.g. `'cifar10'` or
        `'downsampled_imagenet/64x64'`.
      data_dir: TFDS data directory; `None` for the TFDS default.

    Returns:
      A tuple of three Python ints.

    Raises:
      ValueError: for an unknown name, a data set without a uint8 'image'
        feature, or one of varying image size.
    """
    return _image_shape(_builder(name, data_dir))


def is_prepared(name, data_dir=None):
    """Whether the TFDS data set `name` is prepared in `data_dir`.

    A prepared data set opens in seconds; another one is downloaded and
    prepared on first use, which can take hours.

    Raises:
      ValueError: for an unknown name or a data set without a uint8 'image'
        feature.
    """
    return _builder(name, data_dir).is_prepared()


def image_dataset(name, split, batch_size, *, input_context=None,
                  shuffle=True, repeat=True, seed=None, data_dir=None,
                  validation_size=0, drop_remainder=True,
                  shuffle_buffer=10_000, prefetch=True, autocache=True,
                  num_bits=8):
    """Batches of uint8 images `[B, H, W, C]` of a TFDS image data set.

    The pipeline reads the split (file order shuffled if `shuffle`), keeps
    the encoded image only and, given an `input_context`, its own shard:
    every `num_input_pipelines`-th file of the split when it has at least
    that many files, else every `num_input_pipelines`-th example starting
    at `input_pipeline_id`. It then shuffles in a buffer (reshuffled every
    epoch), repeats, decodes and batches with the per-replica batch size.
    Decoding after sharding and shuffling decodes each example once per
    epoch, in one pipeline.

    The data set is prepared (`download_and_prepare`) on first use if it is
    not yet in `data_dir`, as `tfds.load` does: the offline `photo_patches`
    builds in seconds from scikit-image's photographs; the others need a
    network connection. Under multi-worker training, prepare it beforehand.

    Args:
      name: a TFDS image data set, e.g. one of `SUPPORTED_DATASETS`; any TFDS
        data set with a fixed-size uint8 'image' feature works.
      split: `'train'`, `'validation'` or `'test'`. With `validation_size=0`,
        `'validation'` needs a validation split distinct from the test split
        (the supported data sets have none). For downsampled ImageNet,
        `'test'` reads TFDS's 'validation' split (it has no test split).
      batch_size: the global batch size, a positive integer divisible by the
        number of replicas in sync.
      input_context: a `tf.distribute.InputContext`, from
        `strategy.distribute_datasets_from_function`; `None` for a single
        pipeline. Default value: `None`.
      shuffle: shuffle file order and examples (in a buffer), with a new order
        every epoch; otherwise the examples come in the split's order (the
        order of TFDS's `split[i]`), one file after another. Default value:
        `True`.
      repeat: repeat forever; otherwise one pass. Default value: `True`.
      seed: Python int making the order deterministic, together with TF's
        global seed (`tf.random.set_seed`), which tf.data and TFDS combine
        with it; `None` for a random order (with `input_context`, the file
        order still uses seed 0 so that the shards of all pipelines stay
        disjoint). Default value: `None`.
      data_dir: TFDS data directory; `None` for the TFDS default
        (`$TFDS_DATA_DIR` or `~/tensorflow_datasets`). Default value: `None`.
      validation_size: if `N > 0`, `'train'` is the training split without its
        last N examples and `'validation'` those N examples. Default value: 0.
      drop_remainder: drop the last partial batch of each pass (keep `True`
        for training: static batch shape). Default value: `True`.
      shuffle_buffer: examples in the shuffle buffer. Default value: 10,000.
      prefetch: prefetch batches (`tf.data.AUTOTUNE`). Default value: `True`.
      autocache: let TFDS keep a small split (under 250 MiB, e.g. CIFAR-10)
        in memory after the first pass (`tfds.ReadConfig.try_autocache`).
        Pass `False` for a pipeline that is read once or only in part and
        then dropped: its cache would be filled for nothing, and tf.data
        warns when it discards a partly filled one. Default value: `True`.
      num_bits: bits per pixel value, 1 to 8: fewer keep each 8-bit value's
        top bits, `x >> (8 - num_bits)`, as Glow's 5-bit CelebA-HQ does
        (values in `[0, 2**num_bits)`; model them with `num_bins =
        2**num_bits`). Default value: 8.

    Returns:
      A `tf.data.Dataset` of uint8 tensors `[B, H, W, C]`, with `B` the
      per-replica batch size (`batch_size` without `input_context`).

    Raises:
      ValueError: for an unknown data set, a bad split or validation size, or
        a batch size that is not positive or not divisible by the replicas.
      DatasetUnavailableError: if the data set is not prepared and
        preparing it fails (e.g. no network access).
    """
    _check_batch_size(batch_size, input_context)
    if isinstance(num_bits, bool) or not isinstance(
            num_bits, (int, np.integer)) or not 1 <= num_bits <= 8:
        raise ValueError('num_bits must be an integer from 1 to 8; got '
                         f'{num_bits!r}.')
    if isinstance(shuffle_buffer, bool) or not isinstance(
            shuffle_buffer, (int, np.integer)) or shuffle_buffer < 1:
        raise ValueError('shuffle_buffer must be a positive integer; got '
                         f'{shuffle_buffer!r}.')
    _check_seed(seed)
    builder = _builder(name, data_dir)
    shape = _image_shape(builder)
    _tfds_split(builder, split, validation_size)  # Checks before preparing.
    builder = _prepare(builder, name, data_dir)
    tfds_split = _tfds_split(builder, split, validation_size)

    if input_context is None:
        num_pipelines, pipeline_id, per_replica_batch = 1, 0, batch_size
    else:
        num_pipelines = input_context.num_input_pipelines
        pipeline_id = input_context.input_pipeline_id
        per_replica_batch = input_context.get_per_replica_batch_size(
            batch_size)

    by_file = _shards_by_file(builder, tfds_split, num_pipelines)
    # Sharding by example needs every pipeline to read the examples in the
    # same order for the shards to partition them, hence one file-shuffle
    # seed for all pipelines.
    file_seed = seed if seed is not None or num_pipelines == 1 else 0
    read_config = tfds.ReadConfig(
        shuffle_seed=file_seed, shuffle_reshuffle_each_iteration=True,
        try_autocache=bool(autocache),
        input_context=input_context if by_file else None,
        # Unshuffled, one file after the other: TFDS would otherwise
        # interleave a split's files (16 examples of each in turn), and the
        # examples would not come in the split's order, by which scoring
        # names them (`test[i]`).
        **({} if shuffle else dict(interleave_cycle_length=1)))
    image_feature = builder.info.features['image']
    ds = builder.as_dataset(
        split=tfds_split,
        shuffle_files=shuffle,
        read_config=read_config,
        decoders={'image': tfds.decode.SkipDecoding()},
    )
    ds = ds.map(lambda example: example['image'])
    if num_pipelines > 1 and not by_file:
        ds = ds.shard(num_pipelines, pipeline_id)
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=_pipeline_seed(seed, pipeline_id),
                        reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    def decode(encoded):
        image = tf.ensure_shape(image_feature.decode_example(encoded), shape)
        if num_bits < 8:
            image = tf.bitwise.right_shift(image, tf.constant(8 - num_bits,
                                                              tf.uint8))
        return image

    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(per_replica_batch, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.deterministic = True
    ds = ds.with_options(options)
    if prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds


def _shards_by_file(builder, tfds_split, num_pipelines):
    """Whether `num_pipelines` pipelines can split `tfds_split` by file (each
    reading only its own files) rather than by example (each reading all)."""
    if num_pipelines == 1:
        return False
    try:
        files = len(builder.info.splits[tfds_split].file_instructions)
    except (KeyError, ValueError):
        return False
    return files >= num_pipelines


def distributed_image_dataset(strategy, name, split, global_batch_size,
                              **kwargs):
    """`image_dataset` sharded over the input pipelines of `strategy`.

    Checks the arguments and prepares the data set first, then returns
    `strategy.distribute_datasets_from_function` of a function that builds
    `image_dataset(name, split, global_batch_size, input_context=...,
    **kwargs)`: each pipeline keeps its own shard, and each replica receives
    batches of `global_batch_size / strategy.num_replicas_in_sync` images.

    Args:
      strategy: a `tf.distribute.Strategy`.
      name: TFDS image data set (see `image_dataset`).
      split: `'train'`, `'validation'` or `'test'`.
      global_batch_size: positive integer divisible by
        `strategy.num_replicas_in_sync`.
      **kwargs: other arguments of `image_dataset` (not `input_context`).

    Returns:
      A `tf.distribute.DistributedDataset` of per-replica uint8 batches.

    Raises:
      ValueError: as `image_dataset`, raised before any pipeline is built.
      DatasetUnavailableError: as `image_dataset`.
    """
    if 'input_context' in kwargs:
        raise ValueError('distributed_image_dataset makes the input_context; '
                         'do not pass one.')
    _check_batch_size(global_batch_size, tf.distribute.InputContext(
        num_replicas_in_sync=strategy.num_replicas_in_sync))
    builder = _builder(name, kwargs.get('data_dir'))
    _image_shape(builder)
    _tfds_split(builder, split, kwargs.get('validation_size', 0))
    builder = _prepare(builder, name, kwargs.get('data_dir'))
    _tfds_split(builder, split, kwargs.get('validation_size', 0))

    def dataset_fn(input_context):
        return image_dataset(name, split, global_batch_size,
                             input_context=input_context, **kwargs)

    return strategy.distribute_datasets_from_function(dataset_fn)


def checkerboard_dataset(batch_size, seed=0, input_context=None,
                         start_index=0):
    """An infinite data set of 2-D checkerboard points, float32 `[B, 2]`.

    The distribution of `vflow_tfp.data.sample_checkerboard`: uniform on the
    8 black squares (column + row even) of side 2 tiling `[-4, 4]^2`. Batch
    `i` of input pipeline `p` is drawn with stateless random ops from the
    seed `(seed, p)` folded with `i`, so the stream is reproducible and the
    pipelines draw different points. `start_index` skips the first batches
    without drawing them (a resumed run continues the stream exactly).

    Args:
      batch_size: global batch size, a positive integer (divisible by the
        replicas in sync when given an `input_context`).
      seed: Python int; one outside the int64 range is wrapped into it
        (taken modulo 2**64), so every int64 seed keeps its stream.
        Default value: 0.
      input_context: a `tf.distribute.InputContext`, or `None`. Default value:
        `None`.
      start_index: index `i` of the first batch, a non-negative int.
        Default value: 0.

    Returns:
      A `tf.data.Dataset` of float32 `[B, 2]` with `B` the per-replica batch
      size.
    """
    _check_batch_size(batch_size, input_context)
    _check_seed(seed)
    if seed is None:
        # `None` means a random order for the image pipelines; this stream
        # is stateless (a resumed run continues it exactly), so it needs one.
        raise ValueError('checkerboard_dataset needs a seed, a Python int; '
                         'got None.')
    if isinstance(start_index, bool) or not isinstance(
            start_index, (int, np.integer)) or start_index < 0:
        raise ValueError('start_index must be a non-negative int; got '
                         f'{start_index!r}.')
    if input_context is None:
        pipeline_id, per_replica_batch = 0, batch_size
    else:
        pipeline_id = input_context.input_pipeline_id
        per_replica_batch = input_context.get_per_replica_batch_size(
            batch_size)
    # tf.constant refuses a Python int beyond int64 ("out-of-range
    # integer"): wrap it as two's complement, the identity on int64 seeds.
    key = tf.constant([(int(seed) + 2**63) % 2**64 - 2**63, pipeline_id],
                      tf.int64)

    def sample(index):
        seeds = tf.random.experimental.stateless_split(
            tf.random.experimental.stateless_fold_in(key, index), num=4)
        # A uniform column, then one of the two black squares of the column
        # (rows of the column's parity), then a uniform point in the square.
        # Offsets in [0, 2) added to even integers stay inside the square.
        column = tf.random.stateless_uniform(
            [per_replica_batch], seeds[0], minval=0, maxval=4, dtype=tf.int32)
        row = 2 * tf.random.stateless_uniform(
            [per_replica_batch], seeds[1], minval=0, maxval=2,
            dtype=tf.int32) + column % 2
        corner = tf.cast(tf.stack([column, row], axis=-1), tf.float32) * 2.0
        offset = tf.stack([
            tf.random.stateless_uniform([per_replica_batch], seeds[2],
                                        maxval=2.0),
            tf.random.stateless_uniform([per_replica_batch], seeds[3],
                                        maxval=2.0),
        ], axis=-1)
        # The sum can round up onto the square's upper edge (the next,
        # white square): keep it below.
        return tf.minimum((corner - 4.0) + offset,
                          tf.math.nextafter(corner - 2.0, corner - 4.0))

    ds = tf.data.Dataset.counter(int(start_index), dtype=tf.int64).map(
        sample, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


# Helpers.


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else ''


def _supported_message():
    return (f"supported: {', '.join(SUPPORTED_DATASETS)}, or another TFDS "
            "data set with a uint8 'image' feature")


@contextlib.contextmanager
def _discarded_tempdirs():
    """Temporary files made inside go to one directory, removed on exit.

    Building a TFDS builder for a data set not yet prepared runs
    `DatasetInfo.initialize_from_bucket`, which makes a `tmp*tfds`
    directory for metadata from GCS and never removes it (also with GCS
    disabled, offline), so every first use left one behind. `tempfile.tempdir`
    is process-wide: this is only for short calls like `tfds.builder`.
    """
    scratch = tempfile.mkdtemp(prefix='vflow_tfp_tfds_')
    previous = tempfile.tempdir
    tempfile.tempdir = scratch
    try:
        yield
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(scratch, ignore_errors=True)


def _builder(name, data_dir):
    """The TFDS builder of `name`, checked to have a uint8 'image' feature."""
    if not isinstance(name, str) or not name:
        raise ValueError(f'Unknown dataset {name!r}; {_supported_message()}.')
    try:
        with _discarded_tempdirs():
            builder = tfds.builder(name, data_dir=data_dir)
    except (tfds.core.registered.DatasetNotFoundError, ValueError,
            AssertionError) as e:
        # Keep the reason, without TFDS's long lists of near matches.
        reason = re.sub(r'^Failed to construct dataset .*?": ', '',
                        _first_line(e)).split(' Here are ')[0]
        raise ValueError(f'Unknown dataset {name!r} ({reason}); '
                         f'{_supported_message()}.') from e
    features = builder.info.features
    feature = (features['image'] if isinstance(
        features, tfds.features.FeaturesDict) and 'image' in features.keys()
               else None)
    if not isinstance(feature, tfds.features.Image):
        raise ValueError(f"Dataset {name!r} has no 'image' feature; "
                         f'{_supported_message()}.')
    if feature.np_dtype != np.uint8:
        raise ValueError(f"Dataset {name!r} has {feature.np_dtype.__name__} "
                         f"images, not uint8; {_supported_message()}.")
    return builder


def _image_shape(builder):
    shape = tuple(builder.info.features['image'].shape)
    if None in shape[:2]:
        config = builder.builder_config.name if builder.builder_config else ''
        match = re.fullmatch(r'(\d+)x(\d+)', config or '')
        if not match or shape[2] is None:
            raise ValueError(f'Dataset {builder.info.full_name!r} has images '
                             f'of varying size {shape}; image_dataset needs '
                             'a fixed size.')
        shape = (int(match[1]), int(match[2]), shape[2])
    return tuple(int(size) for size in shape)


def _check_batch_size(batch_size, input_context):
    if (isinstance(batch_size, bool)
            or not isinstance(batch_size, (int, np.integer))
            or batch_size <= 0):
        raise ValueError('batch_size must be a positive integer; got '
                         f'{batch_size!r}.')
    if input_context is not None:
        replicas = input_context.num_replicas_in_sync
        if batch_size % replicas:
            raise ValueError(f'The global batch size {batch_size} is not '
                             f'divisible by the {replicas} replicas in sync.')


def _check_seed(seed):
    if seed is not None and (isinstance(seed, bool)
                             or not isinstance(seed, (int, np.integer))):
        raise ValueError(f'seed must be a Python int or None; got {seed!r}.')


def _check_split_name(split):
    if split not in SPLITS:
        raise ValueError(f"split must be one of 'train', 'validation', "
                         f"'test'; got {split!r}.")


def _pipeline_seed(seed, pipeline_id):
    """The shuffle seed of one input pipeline: `seed` for the first."""
    if seed is None:
        return None
    return (int(seed) + pipeline_id * 0x9E3779B97F4A7C15) % 2**63


def _prepare(builder, name, data_dir):
    """Prepares `builder`'s data set if needed; returns a builder to read."""
    if builder.is_prepared():
        return builder
    logging.info('Preparing TFDS dataset %s in %s (first use).',
                 builder.info.full_name, builder.data_dir)
    start = time.monotonic()
    try:
        with _no_retries_if_offline(builder):
            builder.download_and_prepare()
    except Exception as e:  # pylint: disable=broad-except
        if builder.is_prepared():
            # Another process (a second worker sharing the data directory)
            # finished first and TFDS refused to overwrite its result. Read
            # that copy with a new builder: this one's info has no splits.
            logging.info('%s was prepared by another process; using it.',
                         builder.info.full_name)
            return _builder(name, data_dir)
        raise DatasetUnavailableError(
            f'Could not prepare TFDS dataset {builder.info.full_name!r} in '
            f'{builder.data_dir} ({type(e).__name__}: {_first_line(e)}); '
            'prepare it beforehand (e.g. `tfds build`) and pass its data_dir.'
        ) from e
    logging.info('Prepared %s in %.1f s.', builder.info.full_name,
                 time.monotonic() - start)
    return builder


def _unresolvable_host(builder):
    """A host of `builder`'s downloads that DNS cannot resolve, else `None`.

    `None` too when a proxy is configured (the proxy resolves names) or the
    builder lists no download URLs (manual downloads, generated data).
    """
    if set(urllib.request.getproxies()) - {'no'}:  # (`no`: no_proxy)
        return None
    try:
        urls = list(builder.url_infos or ())
    except Exception:  # pylint: disable=broad-except
        return None
    for host in sorted({urllib.parse.urlparse(url).hostname for url in urls}
                       - {None}):
        try:
            socket.getaddrinfo(host, None)
        except OSError:
            return host
    return None


@contextlib.contextmanager
def _no_retries_if_offline(builder):
    """TFDS downloads without retries while a download host is unknown.

    TFDS retries a failed request 10 times with exponential back-off, so on
    a machine without network access a download failed only after about
    3.5 minutes. A name that DNS cannot resolve will not resolve a moment
    later, so the first failure is final. Files already in TFDS's download
    cache are still used: without a request there is nothing to retry.
    """
    host = _unresolvable_host(builder)
    if host is None or not hasattr(_tfds_downloader, 'MAX_RETRIES'):
        yield
        return
    logging.info('Cannot resolve %s: downloading without retries.', host)
    retries = _tfds_downloader.MAX_RETRIES
    _tfds_downloader.MAX_RETRIES = 0
    try:
        yield
    finally:
        _tfds_downloader.MAX_RETRIES = retries


def _available_splits(builder):
    """Split names: TFDS's once prepared, else known ones, else `None`."""
    if builder.info.splits:
        return tuple(builder.info.splits.keys())
    return _KNOWN_SPLITS.get(builder.name)


def _tfds_split(builder, split, validation_size):
    """The TFDS split string that serves as `split`."""
    _check_split_name(split)
    name = builder.info.full_name
    if (isinstance(validation_size, bool)
            or not isinstance(validation_size, (int, np.integer))
            or validation_size < 0):
        raise ValueError('validation_size must be an integer >= 0; got '
                         f'{validation_size!r}.')
    available = _available_splits(builder)
    listing = ', '.join(available) if available else ''
    test_split = _TEST_SPLITS.get(builder.name, 'test')
    if split == 'test':
        if available is not None and test_split not in available:
            raise ValueError(f"Dataset {name!r} has no test split "
                             f"(splits: {listing}).")
        return test_split
    if validation_size > 0:
        if available is not None and 'train' not in available:
            raise ValueError(f"Dataset {name!r} has no 'train' split to hold "
                             f"validation_size examples out of (splits: "
                             f"{listing}).")
        if builder.info.splits and 'train' in builder.info.splits:
            num_train = builder.info.splits['train'].num_examples
            if validation_size >= num_train:
                raise ValueError(f'validation_size={validation_size} leaves '
                                 f'no training examples in {name!r} '
                                 f'({num_train} in its train split).')
        if split == 'train':
            return f'train[:-{validation_size}]'
        return f'train[-{validation_size}:]'
    if split == 'validation':
        if test_split == 'validation':
            raise ValueError(f"The 'validation' split of {name!r} serves as "
                             "its test split; hold out training examples "
                             "with validation_size > 0 instead.")
        if available is not None and 'validation' not in available:
            raise ValueError(f"Dataset {name!r} has no 'validation' split "
                             f"(splits: {listing}); hold out training "
                             "examples with validation_size > 0 (the VFlow "
                             "paper held out 10000).")
    return split
