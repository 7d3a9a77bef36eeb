"""Tests of the input pipelines and of the `photo_patches` TFDS builder.

No data set can be downloaded here: CIFAR-10 and MNIST are mocked with
`tfds.testing.mock_data`; `photo_patches` is built for real (offline) into
temporary directories.
"""

import collections
import glob
import logging
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from vflow_tfp import data
from vflow_tfp import scoring
from vflow_tfp import training
from vflow_tfp.data import pipelines

_NUM_FAKE = 40  # Examples of each mocked split.


def _fake_images(split_name, num):
    """Distinct images: pixel (0, 0) holds the index and the split."""
    rng = np.random.default_rng(0 if split_name == 'train' else 1)
    images = rng.integers(0, 256, size=[num, 32, 32, 3], dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(num)
    images[:, 0, 0, 1] = 0 if split_name == 'train' else 1
    return images


def _fake_as_dataset(self, split, decoders=None, read_config=None,
                     shuffle_files=False):
    """Replaces the reading of TFDS files: splits of `_NUM_FAKE` distinct
    images, sliced by TFDS's own split parser (e.g. 'train[:-10]')."""
    del read_config, shuffle_files
    split_infos = tfds.core.SplitDict([
        tfds.core.SplitInfo(name=name, shard_lengths=[_NUM_FAKE], num_bytes=0)
        for name in ('train', 'test')])
    features = tfds.features.FeaturesDict(
        {'image': self.info.features['image']})
    encoded = []
    for instruction in tfds.core.ReadInstruction.from_spec(
            str(split)).to_absolute(split_infos):
        images = _fake_images(instruction.splitname, _NUM_FAKE)
        encoded += [features['image'].encode_example(image)
                    for image in images[instruction.from_:instruction.to]]
    ds = tf.data.Dataset.from_tensor_slices({'image': encoded})
    return ds.map(lambda ex: features.decode_example(ex, decoders=decoders))


@pytest.fixture(name='mock_cifar')
def _mock_cifar():
    with tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset):
        yield


def _ids(batches):
    """The fake indices (pixel (0, 0, 0)) of all images of `batches`."""
    return [int(i) for batch in batches for i in np.asarray(batch)[:, 0, 0, 0]]


def _take(ds, num):
    return [batch.numpy() for batch in ds.take(num)]


# image_dataset on mocked CIFAR-10 and MNIST.


def test_cifar10_batches(mock_cifar):
    del mock_cifar
    ds = data.image_dataset('cifar10', 'train', 16, seed=0)
    assert ds.element_spec == tf.TensorSpec([16, 32, 32, 3], tf.uint8)
    for batch in _take(ds, 4):  # Crosses an epoch boundary (40 examples).
        assert batch.shape == (16, 32, 32, 3) and batch.dtype == np.uint8
    assert data.image_shape('cifar10') == (32, 32, 3)


def test_drop_remainder_and_one_epoch_is_a_permutation(mock_cifar):
    del mock_cifar
    kept = list(data.image_dataset('cifar10', 'train', 16, seed=0,
                                   repeat=False))
    assert [b.shape[0] for b in kept] == [16, 16]
    every = list(data.image_dataset('cifar10', 'train', 16, seed=0,
                                    repeat=False, drop_remainder=False))
    assert [b.shape[0] for b in every] == [16, 16, 8]
    assert sorted(_ids(every)) == list(range(_NUM_FAKE))
    assert _ids(every) != list(range(_NUM_FAKE))  # Shuffled.
    ordered = data.image_dataset('cifar10', 'test', 8, shuffle=False,
                                 repeat=False)
    ordered = [b.numpy() for b in ordered]
    assert _ids(ordered) == list(range(_NUM_FAKE))
    assert all((b[:, 0, 0, 1] == 1).all() for b in ordered)  # Test images.


def test_determinism_with_seed(mock_cifar):
    del mock_cifar
    first = _take(data.image_dataset('cifar10', 'train', 8, seed=3), 10)
    again = _take(data.image_dataset('cifar10', 'train', 8, seed=3), 10)
    other = _take(data.image_dataset('cifar10', 'train', 8, seed=4), 10)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert _ids(first) != _ids(other)
    # Every epoch (5 batches) is reshuffled.
    assert _ids(first[:5]) != _ids(first[5:])
    assert sorted(_ids(first[5:])) == list(range(_NUM_FAKE))


def test_fewer_bits_keep_the_top_bits(photo_dir):
    kwargs = dict(shuffle=False, repeat=False, drop_remainder=False,
                  data_dir=photo_dir)
    full = np.concatenate(list(data.image_dataset('photo_patches/32x32',
                                                  'test', 64, **kwargs)))
    for bits in (5, 1):
        fewer = np.concatenate(list(data.image_dataset(
            'photo_patches/32x32', 'test', 64, num_bits=bits, **kwargs)))
        assert fewer.dtype == np.uint8
        np.testing.assert_array_equal(fewer, full >> (8 - bits))
        assert fewer.max() == 2 ** bits - 1
    for bits in (0, 9, 5.0, True):
        with pytest.raises(ValueError, match='num_bits must be an integer '
                                             'from 1 to 8'):
            data.image_dataset('photo_patches/32x32', 'test', 8,
                               num_bits=bits, **kwargs)


def test_validation_hold_out(mock_cifar):
    del mock_cifar
    kwargs = dict(repeat=False, drop_remainder=False, validation_size=10,
                  seed=0)
    train = _ids(data.image_dataset('cifar10', 'train', 7, **kwargs))
    valid = _ids(data.image_dataset('cifar10', 'validation', 7, **kwargs))
    assert len(train) == len(set(train)) == _NUM_FAKE - 10
    assert len(valid) == len(set(valid)) == 10
    assert not set(train) & set(valid)
    assert set(train) | set(valid) == set(range(_NUM_FAKE))
    assert set(valid) == set(range(_NUM_FAKE - 10, _NUM_FAKE))  # The last 10.
    with pytest.raises(ValueError, match="no 'validation' split"):
        data.image_dataset('cifar10', 'validation', 8)


def test_sharding_over_two_input_pipelines(mock_cifar):
    del mock_cifar
    shards = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline_id,
            num_replicas_in_sync=2)
        ds = data.image_dataset('cifar10', 'train', 8, input_context=context,
                                seed=5, repeat=False)
        assert ds.element_spec.shape == (4, 32, 32, 3)  # Per replica.
        shards.append(_ids(ds))
    assert len(shards[0]) == len(shards[1]) == _NUM_FAKE // 2
    assert sorted(shards[0] + shards[1]) == list(range(_NUM_FAKE))
    # Each pipeline shuffles its shard with its own seed: with one seed for
    # all, pipeline 1 (examples 2k + 1 of the one mocked file) would serve
    # the neighbour of what pipeline 0 serves at every position, so
    # neighbouring examples would always share a global batch.
    assert [i // 2 for i in shards[0]] != [i // 2 for i in shards[1]]


def test_file_order_of_unseeded_pipelines():
    # Pipelines that shard by example partition the split only if all of
    # them read the files in the same order, so without a seed they share
    # file seed 0; one pipeline alone gets a new order each run (None).
    read = []

    def recording_as_dataset(self, split, decoders=None, read_config=None,
                             shuffle_files=False):
        read.append((read_config.shuffle_seed, shuffle_files,
                     read_config.input_context))
        return _fake_as_dataset(self, split, decoders, read_config,
                                shuffle_files)

    with tfds.testing.mock_data(as_dataset_fn=recording_as_dataset):
        for seed in (None, 5):
            data.image_dataset('cifar10', 'train', 8, seed=seed)
            for pipeline_id in range(2):
                context = tf.distribute.InputContext(
                    num_input_pipelines=2, input_pipeline_id=pipeline_id,
                    num_replicas_in_sync=2)
                data.image_dataset('cifar10', 'train', 8, seed=seed,
                                   input_context=context)
    # (The mocked split is one file: sharded by example, no input context.)
    assert read == [(None, True, None), (0, True, None), (0, True, None),
                    (5, True, None), (5, True, None), (5, True, None)]


@pytest.mark.parametrize('num_replicas', [1, 2])
def test_distributed_image_dataset(mock_cifar, num_replicas):
    del mock_cifar
    devices = [d.name for d in tf.config.list_logical_devices('CPU')]
    if len(devices) < num_replicas:
        pytest.skip(f'needs {num_replicas} logical CPUs (tests/conftest.py)')
    strategy = tf.distribute.MirroredStrategy(devices[:num_replicas])
    dist = data.distributed_image_dataset(strategy, 'cifar10', 'train', 8,
                                          seed=0, repeat=False)
    parts = []
    for batch in dist:
        local = strategy.experimental_local_results(batch)
        assert [tuple(p.shape) for p in local] == \
            [(8 // num_replicas, 32, 32, 3)] * num_replicas
        assert local[0].dtype == tf.uint8
        parts += local
    # One epoch: every example once, across the replicas.
    assert sorted(_ids(parts)) == list(range(_NUM_FAKE))
    if num_replicas > 1:
        with pytest.raises(ValueError, match='not divisible by the 2'):
            data.distributed_image_dataset(strategy, 'cifar10', 'train', 7)


def test_mnist_with_default_mock():
    with tfds.testing.mock_data(num_examples=20):
        ds = data.image_dataset('mnist', 'test', 4, seed=0, repeat=False)
        batches = list(ds)
    assert len(batches) == 5
    assert batches[0].shape == (4, 28, 28, 1) and batches[0].dtype == tf.uint8


def test_image_shape_without_download(tmp_path):
    expected = {
        'cifar10': (32, 32, 3),
        'downsampled_imagenet/32x32': (32, 32, 3),
        'downsampled_imagenet/64x64': (64, 64, 3),
        'mnist': (28, 28, 1),
        'photo_patches/8x8': (8, 8, 3),
        'photo_patches/16x16': (16, 16, 3),
        'photo_patches/32x32': (32, 32, 3),
    }
    assert set(expected) == set(data.SUPPORTED_DATASETS)
    for name, shape in expected.items():
        assert data.image_shape(name, data_dir=str(tmp_path)) == shape
    assert not list(tmp_path.iterdir())


# Errors.


@pytest.mark.parametrize('name', ['no_such_dataset', 'cifar10/64x64',
                                  'imdb_reviews', ''])
def test_unknown_dataset_names(name, tmp_path):
    with pytest.raises(ValueError) as info:
        data.image_dataset(name, 'train', 8, data_dir=str(tmp_path))
    message = str(info.value)
    assert '\n' not in message
    assert repr(name) in message and 'cifar10, downsampled_imagenet/32x32' \
        in message and 'photo_patches/16x16' in message
    with pytest.raises(ValueError, match='supported: '):
        data.image_shape(name, data_dir=str(tmp_path))


def test_bad_arguments(tmp_path):
    kwargs = dict(data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="split must be one of 'train', "
                                         "'validation', 'test'; got 'val'"):
        data.image_dataset('photo_patches/8x8', 'val', 8, **kwargs)
    for size in (0, -4, 2.5, True, None):
        with pytest.raises(ValueError, match='batch_size must be a positive'):
            data.image_dataset('photo_patches/8x8', 'train', size, **kwargs)
        with pytest.raises(ValueError, match='batch_size must be a positive'):
            data.checkerboard_dataset(size)
    context = tf.distribute.InputContext(2, 0, 2)
    with pytest.raises(ValueError, match='global batch size 7 is not '
                                         'divisible by the 2 replicas'):
        data.image_dataset('photo_patches/8x8', 'train', 7,
                           input_context=context, **kwargs)
    with pytest.raises(ValueError, match='not divisible by the 2 replicas'):
        data.checkerboard_dataset(5, input_context=context)
    # (Not a random stream, as `None` is for the image pipelines: before,
    # it was quietly seed 0's.)
    with pytest.raises(ValueError, match='needs a seed, a Python int; got '
                                         'None'):
        data.checkerboard_dataset(8, seed=None)
    with pytest.raises(ValueError, match='validation_size must be'):
        data.image_dataset('photo_patches/8x8', 'train', 8,
                           validation_size=-1, **kwargs)
    with pytest.raises(ValueError, match='serves as its test split'):
        data.image_dataset('downsampled_imagenet/32x32', 'validation', 8,
                           **kwargs)
    # Checked before preparing anything.
    assert not list(tmp_path.iterdir())


def test_a_failed_preparation_names_the_data_set_and_the_cause(
        tmp_path, monkeypatch):
    def download_and_prepare(self, *args, **kwargs):
        raise ConnectionError('no network here\nsecond line')
    monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare',
                        download_and_prepare)
    for make in (
            lambda: data.image_dataset('cifar10', 'train', 8,
                                       data_dir=str(tmp_path)),
            lambda: data.distributed_image_dataset(
                tf.distribute.get_strategy(), 'cifar10', 'test', 8,
                data_dir=str(tmp_path))):
        with pytest.raises(data.DatasetUnavailableError) as info:
            make()
        message = str(info.value)
        assert "'cifar10/" in message and str(tmp_path) in message
        assert '(ConnectionError: no network here)' in message
        assert 'second line' not in message
        assert isinstance(info.value.__cause__, ConnectionError)
        # Still a RuntimeError, for callers written against that.
        assert isinstance(info.value, RuntimeError)


def test_an_unresolvable_download_host_fails_without_retries(
        tmp_path, monkeypatch, caplog):
    # Offline, TFDS used to retry a download 10 times with back-off (about
    # 3.5 minutes) before failing.
    from tensorflow_datasets.core.download import downloader
    for variable in ('http_proxy', 'https_proxy', 'HTTP_PROXY',
                     'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY'):
        monkeypatch.delenv(variable, raising=False)
    looked_up = []

    def getaddrinfo(host, *args, **kwargs):
        looked_up.append(host)
        raise socket.gaierror(socket.EAI_NONAME, 'Name or service not known')
    monkeypatch.setattr(socket, 'getaddrinfo', getaddrinfo)
    # absl's logger has a level of its own, which other tests in the
    # process may have left at WARNING (absl's verbosity).
    with caplog.at_level(logging.INFO), caplog.at_level(
            logging.INFO, logger='absl'), pytest.raises(
                data.DatasetUnavailableError, match='www.cs.toronto.edu'):
        data.image_dataset('cifar10', 'train', 8, data_dir=str(tmp_path))
    assert 'Cannot resolve www.cs.toronto.edu' in caplog.text
    assert not [r for r in caplog.records if 'Retrying' in r.getMessage()]
    # The lookups are the probe's and the one request's: no retry.
    assert looked_up.count('www.cs.toronto.edu') == 2
    assert downloader.MAX_RETRIES == 10  # Restored.

    # Behind a proxy the names are the proxy's to resolve: no probe.
    monkeypatch.setenv('https_proxy', 'http://proxy.invalid:3128')
    seen = []

    def download_and_prepare(self, *args, **kwargs):
        seen.append(downloader.MAX_RETRIES)
        raise ConnectionError('proxy unreachable')
    monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare',
                        download_and_prepare)
    looked_up.clear()
    with pytest.raises(data.DatasetUnavailableError):
        data.image_dataset('cifar10', 'train', 8, data_dir=str(tmp_path))
    assert seen == [10] and not looked_up


def test_a_data_set_prepared_meanwhile_by_another_process_is_used(
        tmp_path, monkeypatch):
    # Two workers sharing a data directory both start preparing; the one
    # that finishes second finds TFDS's destination taken.
    prepare = tfds.core.DatasetBuilder.download_and_prepare

    def racing(self, *args, **kwargs):
        other = tfds.builder('photo_patches/32x32', data_dir=str(tmp_path))
        prepare(other)
        raise FileExistsError(f'Cannot rename incomplete.x_1.0.0. '
                              f'Destination {self.data_dir} already exists.')
    monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare',
                        racing)
    ds = data.image_dataset('photo_patches/32x32', 'test', 8,
                            data_dir=str(tmp_path), repeat=False,
                            drop_remainder=False)
    assert sum(int(batch.shape[0]) for batch in ds) == 82


# The photo_patches builder (real TFDS files, built offline).


@pytest.fixture(name='photo_dir', scope='module')
def _photo_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp('tfds'))
    tfds.builder('photo_patches/32x32', data_dir=data_dir
                 ).download_and_prepare()
    return data_dir


@pytest.fixture(name='four_file_dir', scope='module')
def _four_file_dir(tmp_path_factory):
    """photo_patches/32x32 prepared with every split in 4 files."""
    data_dir = str(tmp_path_factory.mktemp('tfds4'))
    tfds.builder('photo_patches/32x32', data_dir=data_dir
                 ).download_and_prepare(
                     download_config=tfds.download.DownloadConfig(
                         num_shards=4))
    return data_dir


def test_a_split_in_enough_files_is_sharded_by_file(four_file_dir):
    # Prepared in 4 files: two pipelines each read their own two files
    # (every other one), not all four keeping every other example.
    data_dir = four_file_dir
    builder = tfds.builder('photo_patches/32x32', data_dir=data_dir)
    for split, validation_size in (('test', 0), ('train', 0),
                                   ('train', 30), ('validation', 30)):
        # pylint: disable-next=protected-access
        tfds_split = pipelines._tfds_split(builder, split, validation_size)
        files = builder.info.splits[tfds_split].file_instructions
        shards = []
        for pipeline_id in range(2):
            context = tf.distribute.InputContext(2, pipeline_id, 2)
            ds = data.image_dataset(
                'photo_patches/32x32', split, 2, input_context=context,
                data_dir=data_dir, repeat=False, drop_remainder=False,
                validation_size=validation_size, seed=1)
            shards.append([image.tobytes() for batch in ds
                           for image in batch.numpy()])
        everything = [image.tobytes() for batch in data.image_dataset(
            'photo_patches/32x32', split, 64, data_dir=data_dir,
            repeat=False, drop_remainder=False,
            validation_size=validation_size) for image in batch.numpy()]
        assert sorted(shards[0] + shards[1]) == sorted(everything)
        if len(files) >= 2:
            # Each pipeline holds the examples of its files.
            assert [len(shard) for shard in shards] == [
                sum(f.examples_in_shard - f.skip if f.takes_all else f.take
                    for f in files[i::2]) for i in range(2)]
        else:  # The 30 held-out images fit in one file: every other one.
            assert [len(shard) for shard in shards] == [15, 15]


def test_unshuffled_examples_come_in_the_split_s_order(four_file_dir):
    # TFDS interleaves a split's files (16 examples of each in turn) unless
    # told otherwise; scoring names an unshuffled pipeline's i-th example
    # `test[i]`, which must be TFDS's `test[i]`.
    builder = tfds.builder('photo_patches/32x32', data_dir=four_file_dir)
    assert len(builder.info.splits['test'].file_instructions) == 4
    count = builder.info.splits['test'].num_examples
    images = np.concatenate(list(data.image_dataset(
        'photo_patches/32x32', 'test', 64, data_dir=four_file_dir,
        shuffle=False, repeat=False, drop_remainder=False)))
    assert len(images) == count
    info = {'kind': 'image', 'data_shape': [32, 32, 3], 'num_bins': 256}
    sliced = scoring.open_inputs(['tfds:photo_patches/32x32:test[15:18]'],
                                 info, data_dir=four_file_dir)
    (names, scored), = sliced.batches(8)
    assert names == [f'tfds:photo_patches/32x32:test[{i}]'
                     for i in (15, 16, 17)]
    for i in (0, 15, 16, 17, 40, count - 1):
        example, = tfds.as_numpy(
            builder.as_dataset(split=f'test[{i}:{i + 1}]'))
        np.testing.assert_array_equal(images[i], example['image'])
        if 15 <= i < 18:
            np.testing.assert_array_equal(scored[i - 15], example['image'])


def test_a_split_in_as_many_files_as_pipelines_is_sharded_by_file(
        tmp_path):
    """Two files, two pipelines: TFDS splits the files between them (its
    read_config gets the input context), rather than each pipeline reading
    both files and keeping every other example."""
    data_dir = str(tmp_path)
    builder = tfds.builder('photo_patches/32x32', data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(num_shards=2))
    assert len(builder.info.splits['train'].file_instructions) == 2
    contexts = []
    as_dataset = tfds.core.DatasetBuilder.as_dataset

    def recording(self, *args, read_config=None, **kwargs):
        contexts.append(read_config.input_context)
        return as_dataset(self, *args, read_config=read_config, **kwargs)

    context = tf.distribute.InputContext(2, 1, 2)
    with mock.patch.object(tfds.core.DatasetBuilder, 'as_dataset',
                           recording):
        ds = data.image_dataset('photo_patches/32x32', 'train', 2,
                                input_context=context, data_dir=data_dir,
                                repeat=False, seed=1)
    assert contexts == [context]
    assert sum(len(batch) for batch in ds) > 0


def test_photo_patches_builder(photo_dir):
    builder = tfds.builder('photo_patches/32x32', data_dir=photo_dir)
    assert builder.is_prepared()
    assert str(builder.info.version) == '1.0.0'
    assert 'scikit-image' in builder.info.citation
    splits = builder.info.splits
    assert splits['train'].num_examples == len(data.photo_patches(32, 'train'))
    assert splits['test'].num_examples == len(data.photo_patches(32, 'test'))
    names = builder.info.features['photo'].names
    # The integer labels are part of version 1.0.0: label 1 is the Hubble
    # photograph in every copy, whatever code prepared it.
    assert names == ['astronaut', 'hubble_deep_field', 'immunohistochemistry',
                     'retina', 'rocket', 'motorcycle', 'chelsea', 'coffee']
    photos = {}
    for split in ('train', 'test'):
        ds = tfds.load('photo_patches/32x32', split=split, data_dir=photo_dir)
        assert ds.element_spec['image'] == tf.TensorSpec([32, 32, 3],
                                                         tf.uint8)
        examples = list(tfds.as_numpy(ds))
        assert len(examples) == splits[split].num_examples
        photos[split] = {names[ex['photo']] for ex in examples}
    assert photos['train'] == set(data.TRAIN_PHOTOS)
    assert photos['test'] == set(data.TEST_PHOTOS)
    assert not photos['train'] & photos['test']


def test_photo_patches_builder_examples_are_the_pinned_shuffle(tmp_path):
    # Version 1.0.0 of the data set: example k is patch k of the seed-0
    # shuffle of the 2x-downscaled photographs (a change of either is a new
    # version, not a silent one).
    # pylint: disable-next=g-import-not-at-top
    from vflow_tfp.data import photo_patches_dataset
    builder = photo_patches_dataset.PhotoPatches(config='32x32',
                                                 data_dir=str(tmp_path))
    # pylint: disable-next=protected-access
    examples = list(builder._generate_examples('test'))
    patches, sources = data.photo_patches(32, 'test', seed=0, downscale=2,
                                          return_sources=True)
    assert [key for key, _ in examples] == list(range(len(patches)))
    for (_, example), patch, source in zip(examples, patches, sources):
        np.testing.assert_array_equal(example['image'], patch)
        assert example['photo'] == source


def test_photo_patches_validation_hold_out(photo_dir):
    """Real TFDS slicing: train and validation partition the train split."""
    def hashes(split, **kwargs):
        ds = data.image_dataset('photo_patches/32x32', split, 64,
                                data_dir=photo_dir, repeat=False,
                                drop_remainder=False, seed=1, **kwargs)
        return [hash(image.tobytes()) for batch in ds
                for image in batch.numpy()]

    everything = hashes('train')
    train = hashes('train', validation_size=100)
    valid = hashes('validation', validation_size=100)
    assert len(train) == len(everything) - 100 and len(valid) == 100
    # Some patches repeat (black sky), so compare multisets.
    assert collections.Counter(train) + collections.Counter(valid) == \
        collections.Counter(everything)
    test = hashes('test')
    assert len(test) == 82 and not set(test) & set(everything)
    # Holding out every training patch leaves none (and one more, too).
    for size in (len(everything), 10_000):
        with pytest.raises(ValueError, match='leaves no training examples'):
            data.image_dataset('photo_patches/32x32', 'train', 8,
                               data_dir=photo_dir, validation_size=size)


def _dataset_ops(ds):
    graph = tf.compat.v1.GraphDef()
    # pylint: disable-next=protected-access
    graph.ParseFromString(ds._as_serialized_graph().numpy())
    return {node.op for node in graph.node}


def test_evaluation_pipelines_are_not_cached(photo_dir):
    # TFDS caches a small split in memory; a pipeline built for one pass,
    # or read in part (the importance-weighted bound), gains nothing from
    # it, and tf.data warns on discarding a partly filled cache.
    kwargs = dict(data_dir=photo_dir, shuffle=False, repeat=False)
    cached = data.image_dataset('photo_patches/32x32', 'test', 8, **kwargs)
    assert 'CacheDatasetV2' in _dataset_ops(cached)
    uncached = data.image_dataset('photo_patches/32x32', 'test', 8,
                                  autocache=False, **kwargs)
    assert not any('Cache' in op for op in _dataset_ops(uncached))
    inputs = training.training_inputs('photo_patches/32x32', 8,
                                      init_batch_size=4, data_dir=photo_dir)
    assert not any('Cache' in op
                   for op in _dataset_ops(inputs.eval_input_fn(None)))
    # Scoring reads a split once, or a slice of it.
    for spec in ('tfds:photo_patches/32x32',
                 'tfds:photo_patches/32x32:test[:3]'):
        # pylint: disable-next=protected-access
        source = scoring._TfdsSplit(spec, (32, 32, 3), photo_dir)
        assert not any('Cache' in op for op in _dataset_ops(source.dataset))
    # The same images either way.
    assert np.array_equal(np.concatenate(list(cached)),
                          np.concatenate(list(uncached)))


def _tfds_tempdirs():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), 'tmp*tfds')))


def test_image_dataset_prepares_photo_patches(tmp_path, caplog):
    # (On absl's logger too, whose level another test may have raised.)
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger='absl')
    # TFDS 4.9.10 leaves a `tmp*tfds` directory behind whenever a builder
    # is made for a data set that is not prepared yet (shown here, then
    # removed; a later TFDS may not leak at all); ours must not.
    before = _tfds_tempdirs()
    leaking = tfds.builder('photo_patches/32x32',
                           data_dir=str(tmp_path / 'other'))
    assert not leaking.is_prepared()
    leaked = _tfds_tempdirs() - before
    for path in leaked:
        shutil.rmtree(path)
    assert len(leaked) <= 1
    before = _tfds_tempdirs()
    ds = data.image_dataset('photo_patches/32x32', 'train', 16,
                            data_dir=str(tmp_path), seed=0)
    assert _tfds_tempdirs() == before
    assert any('Preparing TFDS dataset photo_patches/32x32' in record.message
               for record in caplog.records)
    assert tfds.builder('photo_patches/32x32',
                        data_dir=str(tmp_path)).is_prepared()
    batch = next(iter(ds))
    assert batch.shape == (16, 32, 32, 3) and batch.dtype == tf.uint8


# The checkerboard.


def test_checkerboard_dataset_distribution():
    points = np.concatenate(_take(data.checkerboard_dataset(1024, seed=1),
                                  16))
    assert points.shape == (16 * 1024, 2) and points.dtype == np.float32
    assert np.isfinite(data.checkerboard_log_prob(points)).all()
    cells = np.floor((points + 4.0) / 2.0).astype(int)
    counts = np.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16)
    black = counts[[c * 4 + r for c in range(4) for r in range(4)
                    if (c + r) % 2 == 0]]
    assert black.sum() == len(points)
    expected = len(points) / 8  # 2048; standard deviation about 42.
    assert np.all(np.abs(black - expected) < 0.1 * expected), black
    # Uniform inside the squares.
    offsets = (points + 4.0) % 2.0
    np.testing.assert_allclose(offsets.mean(axis=0), [1.0, 1.0], atol=0.03)
    np.testing.assert_allclose(offsets.var(axis=0), [1 / 3, 1 / 3], atol=0.02)


class _EdgeGenerator(np.random.Generator):
    """Every uniform draw is the largest float64 below its upper bound."""

    def uniform(self, low=0.0, high=1.0, size=None):
        return np.full(size, np.nextafter(high, low))


def test_checkerboard_points_at_the_squares_edges():
    # float64 draws just below an edge round onto it in float32, i.e. onto
    # the next (white) square or onto x = 4, unless kept below it.
    points = data.sample_checkerboard(8, _EdgeGenerator(np.random.PCG64(0)))
    assert points.dtype == np.float32 and np.all(points < 4.0)
    assert np.all(data.checkerboard_log_prob(points)
                  == data.CHECKERBOARD_LOG_LIKELIHOOD)
    # The support is [-4, 4) on both axes, edges included where the
    # sampler includes them.
    np.testing.assert_array_equal(
        data.checkerboard_log_prob([[-4.0, -4.0], [-4.0, 4.0], [-2.0, -2.0],
                                    [-1e-30, 0.5]]),
        [data.CHECKERBOARD_LOG_LIKELIHOOD, -np.inf,
         data.CHECKERBOARD_LOG_LIKELIHOOD, -np.inf])


def test_checkerboard_log_likelihood_is_that_of_the_density():
    # The density is 1/32 on half of [-4, 4)^2: it integrates to one, and
    # its log is the constant (the target every table compares with).
    assert data.CHECKERBOARD_LOG_LIKELIHOOD == -math.log(32.0)
    # Midpoint rule on cells aligned with the squares: exact.
    centres = -4.0 + 0.125 * (np.arange(64) + 0.5)
    xs, ys = np.meshgrid(centres, centres)
    density = np.exp(data.checkerboard_log_prob(np.stack([xs, ys], -1)))
    assert density.sum() * 0.125**2 == pytest.approx(1.0, abs=1e-12)
    assert set(np.unique(density)) == {0.0, 1.0 / 32.0}


def test_checkerboard_dataset_streams():
    first = _take(data.checkerboard_dataset(64, seed=2), 3)
    again = _take(data.checkerboard_dataset(64, seed=2), 3)
    other = _take(data.checkerboard_dataset(64, seed=3), 3)
    for a, b, c in zip(first, again, other):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
    assert not np.array_equal(first[0], first[1])
    pipelines_ = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(2, pipeline_id, 4)
        ds = data.checkerboard_dataset(64, seed=2, input_context=context)
        assert ds.element_spec == tf.TensorSpec([16, 2], tf.float32)
        pipelines_.append(_take(ds, 1)[0])
    assert not np.array_equal(pipelines_[0], pipelines_[1])


def test_resumed_training_streams(mock_cifar):
    """A run resumed at step k does not replay the data from the start: the
    checkerboard stream continues exactly, an image stream is reshuffled."""
    del mock_cifar
    board = training.training_inputs('checkerboard', 16, seed=4)
    whole = _take(board.train_input_fn(None), 5)
    for a, b in zip(_take(board.train_input_fn(None, 3), 2), whole[3:]):
        np.testing.assert_array_equal(a, b)
    # One input pipeline feeding two replicas serves two batches a step.
    context = tf.distribute.InputContext(1, 0, 2)
    whole = _take(board.train_input_fn(context), 6)
    for a, b in zip(_take(board.train_input_fn(context, 2), 2), whole[4:]):
        np.testing.assert_array_equal(a, b)
    # Two workers' pipelines for four replicas: each serves two a step
    # (its replicas'), not four, and resumes where it stopped.
    context = tf.distribute.InputContext(2, 1, 4)
    whole = _take(board.train_input_fn(context), 6)
    for a, b in zip(_take(board.train_input_fn(context, 2), 2), whole[4:]):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match='start_index must be'):
        data.checkerboard_dataset(16, start_index=-1)

    images = training.training_inputs('cifar10', 8, init_batch_size=8,
                                      seed=3)
    fresh = _take(images.train_input_fn(None), 5)  # One epoch of 40.
    assert _ids(_take(images.train_input_fn(None, 0), 5)) == _ids(fresh)
    resumed = _take(images.train_input_fn(None, 5), 5)
    assert _ids(resumed) != _ids(fresh)
    assert sorted(_ids(resumed)) == list(range(_NUM_FAKE))
    assert _ids(_take(images.train_input_fn(None, 5), 5)) == _ids(resumed)
    # A fresh run keeps its seed (its order is the data set's own for that
    # seed); an unseeded one stays unseeded when resumed.
    assert training.inputs.resume_seed(3, 0) == 3
    assert training.inputs.resume_seed(None, 5) is None
    assert training.inputs.resume_seed(3, 5) not in (3, None)
    # The seed mixes in the step: a run resumed twice (at steps 5 and 10)
    # does not replay its first resumption's order either.
    resumed_again = _take(images.train_input_fn(None, 10), 5)
    assert _ids(resumed_again) != _ids(resumed)
    assert training.inputs.resume_seed(3, 10) != \
        training.inputs.resume_seed(3, 5)


def test_an_init_batch_larger_than_the_split_draws_with_replacement(
        mock_cifar):
    """SPEC §3: the init batch is drawn with replacement, so it may be
    larger than the training split; a smaller one has no repeats."""
    del mock_cifar
    large = training.training_inputs('cifar10', 8,
                                     init_batch_size=_NUM_FAKE + 10, seed=3)
    ids = _ids([large.init_batch])
    assert len(ids) == _NUM_FAKE + 10
    assert sorted(set(ids)) == list(range(_NUM_FAKE))
    small = training.training_inputs('cifar10', 8, init_batch_size=16,
                                     seed=3)
    assert len(set(_ids([small.init_batch]))) == 16


def test_training_inputs_evaluate_every_held_out_image_in_order(
        mock_cifar):
    """The evaluation pipeline of training_inputs: one pass over the whole
    evaluation split in its own order, the last partial batch kept, and
    the held-out training images with validation_size."""
    del mock_cifar
    held_out = training.training_inputs('cifar10', 16, init_batch_size=8,
                                        seed=3, validation_size=10)
    batches = [b.numpy() for b in held_out.eval_input_fn(None)]
    assert [b.shape[0] for b in batches] == [10]
    assert _ids(batches) == list(range(_NUM_FAKE - 10, _NUM_FAKE))
    assert all((b[:, 0, 0, 1] == 0).all() for b in batches)  # Training.
    # The held-out images do not reach the initialisation either: an init
    # batch of one epoch of the rest holds all of the rest and nothing else.
    init = training.training_inputs(
        'cifar10', 16, init_batch_size=_NUM_FAKE - 10, seed=3,
        validation_size=10).init_batch
    assert sorted(_ids([init])) == list(range(_NUM_FAKE - 10))
    test = training.training_inputs('cifar10', 16, init_batch_size=8,
                                    seed=3)
    batches = [b.numpy() for b in test.eval_input_fn(None)]
    assert [b.shape[0] for b in batches] == [16, 16, 8]
    assert _ids(batches) == list(range(_NUM_FAKE))  # In order, twice:
    assert _ids(b.numpy() for b in test.eval_input_fn(None)) == \
        list(range(_NUM_FAKE))
    assert all((b[:, 0, 0, 1] == 1).all() for b in batches)  # Test images.


def test_the_init_batch_is_fixed_by_the_seed(mock_cifar):
    """Every worker builds the inputs itself: the same seed must give the
    same init batch (the initialisation's statistics), another seed
    another one."""
    del mock_cifar
    first, again, other = (
        training.training_inputs('cifar10', 8, init_batch_size=16,
                                 seed=seed).init_batch for seed in (3, 3, 4))
    np.testing.assert_array_equal(first, again)
    assert _ids([first]) != _ids([other])
    # The checkerboard's init points likewise (the seed sweeps of the toy
    # experiment start from other points).
    first, again, other = (
        training.training_inputs('checkerboard', 8, init_batch_size=16,
                                 seed=seed).init_batch for seed in (3, 3, 4))
    np.testing.assert_array_equal(first, again)
    assert not np.any(first == other)


def test_downsampled_imagenet_is_tested_on_its_validation_split(tmp_path):
    # Downsampled ImageNet has no test split: 'test' reads TFDS's
    # 'validation' (checked before anything is prepared).
    # pylint: disable-next=protected-access
    builder = pipelines._builder('downsampled_imagenet/32x32',
                                 str(tmp_path))
    # pylint: disable-next=protected-access
    assert pipelines._tfds_split(builder, 'test', 0) == 'validation'
    # pylint: disable-next=protected-access
    assert pipelines._tfds_split(builder, 'train', 0) == 'train'


def test_photo_patches_is_registered():
    assert 'photo_patches' in tfds.list_builders()
    assert pipelines.SUPPORTED_DATASETS == data.SUPPORTED_DATASETS


def test_photo_patches_builds_without_importlib_resources(tmp_path):
    # TFDS 4.9.10 looks up a builder's URL checksums with the package
    # `importlib_resources`, which it does not declare; photo_patches, which
    # downloads nothing, builds offline without it (a new process that
    # cannot import it).
    code = ('import sys\n'
            'sys.modules["importlib_resources"] = None\n'
            'import tensorflow_datasets as tfds\n'
            'import vflow_tfp.data\n'
            f'builder = tfds.builder("photo_patches/32x32", '
            f'data_dir={str(tmp_path)!r})\n'
            'builder.download_and_prepare()\n'
            'print(builder.info.splits["test"].num_examples)\n')
    run = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split()[-1] == '82'


# Arguments, options and the inputs of training_inputs.


def _assert_value_error(make, message):
    """`make()` raises a ValueError whose message contains `message`
    (not another error from deeper inside TFDS or tf.data)."""
    with pytest.raises(Exception) as info:
        make()
    assert isinstance(info.value, ValueError), info.value
    assert message in str(info.value), info.value


def test_training_inputs_give_every_image_num_bits(photo_dir):
    """training_inputs' num_bits applies to every image it serves: the
    init batch, the training stream and the evaluation pass hold the top
    `num_bits` bits of the 8-bit images, as image_dataset's do."""
    kwargs = dict(init_batch_size=16, seed=3, data_dir=photo_dir)
    full = training.training_inputs('photo_patches/32x32', 8, **kwargs)
    fewer = training.training_inputs('photo_patches/32x32', 8, num_bits=5,
                                     **kwargs)
    np.testing.assert_array_equal(fewer.init_batch, full.init_batch >> 3)
    for make in (lambda inputs: inputs.eval_input_fn(None),
                 lambda inputs: inputs.train_input_fn(None).take(3)):
        images = np.concatenate(list(make(full)))
        np.testing.assert_array_equal(np.concatenate(list(make(fewer))),
                                      images >> 3)
        assert images.max() >= 2 ** 5  # Fewer bits are seen to drop some.


def test_init_and_evaluation_pipelines_are_not_autocached():
    """TFDS's in-memory cache (autocache) is for a pipeline read again and
    again: the init batch (one batch, then dropped) and the evaluation
    pipelines (built anew for every pass) read without it."""
    read = []

    def recording_as_dataset(self, split, decoders=None, read_config=None,
                             shuffle_files=False):
        read.append((str(split), read_config.try_autocache))
        return _fake_as_dataset(self, split, decoders, read_config,
                                shuffle_files)

    with tfds.testing.mock_data(as_dataset_fn=recording_as_dataset):
        inputs = training.training_inputs('cifar10', 8, init_batch_size=8,
                                          seed=3)
        assert read == [('train', False)]  # The init batch.
        inputs.eval_input_fn(None)
    assert read[1:] == [('test', False)]


def test_checkerboard_evaluation_is_sharded_over_the_pipelines():
    """The checkerboard's fixed 1,000 test points (the same for every
    seed) are split between the input pipelines, each batching them with
    its per-replica batch size: every point is scored once."""
    expected = data.sample_checkerboard(
        training.inputs.CHECKERBOARD_TEST_SIZE,
        seed=training.inputs.CHECKERBOARD_TEST_SEED)
    for seed in (0, 4):
        board = training.training_inputs('checkerboard', 64, seed=seed)
        np.testing.assert_array_equal(
            np.concatenate(list(board.eval_input_fn(None))), expected)
        shards = []
        for pipeline_id in range(2):
            context = tf.distribute.InputContext(2, pipeline_id, 4)
            batches = list(board.eval_input_fn(context))
            assert max(len(batch) for batch in batches) == 16  # 64 / 4.
            shards.append(np.concatenate(batches))
        assert len(shards[0]) + len(shards[1]) == len(expected)
        np.testing.assert_array_equal(
            np.sort(np.concatenate(shards), axis=0), np.sort(expected, axis=0))


def test_distributed_image_dataset_checks_before_preparing(tmp_path):
    """distributed_image_dataset refuses a bad split, validation size or
    global batch size with image_dataset's ValueError before it prepares
    anything."""
    strategy = tf.distribute.get_strategy()
    for split, validation_size, message in (
            ('val', 0, 'split must be one of'),
            ('validation', 0, "no 'validation' split"),
            ('train', -1, 'validation_size must be')):
        with pytest.raises(ValueError, match=message):
            data.distributed_image_dataset(
                strategy, 'photo_patches/8x8', split, 8,
                data_dir=str(tmp_path), validation_size=validation_size)
    devices = [d.name for d in tf.config.list_logical_devices('CPU')]
    if len(devices) >= 2:  # (tests/conftest.py)
        with pytest.raises(ValueError, match='not divisible by the 2'):
            data.distributed_image_dataset(
                tf.distribute.MirroredStrategy(devices[:2]),
                'photo_patches/8x8', 'train', 7, data_dir=str(tmp_path))
    assert not list(tmp_path.iterdir())


def test_bad_pipeline_arguments_are_refused_by_name(mock_cifar):
    """Bad arguments raise a ValueError that names them (image_dataset's
    Raises), not an error from deeper inside TFDS or tf.data."""
    del mock_cifar
    cases = [(dict(shuffle_buffer=size), 'shuffle_buffer must be a positive '
              'integer') for size in (0, -1, 2.5, True)]
    cases += [(dict(seed=seed), 'seed must be a Python int or None')
              for seed in (1.5, '3', True)]
    for kwargs, message in cases:
        _assert_value_error(
            lambda kwargs=kwargs: data.image_dataset('cifar10', 'train', 8,
                                                     **kwargs),
            message)
    # distributed_image_dataset makes the input context itself.
    context = tf.distribute.InputContext(1, 0, 1)
    _assert_value_error(
        lambda: data.distributed_image_dataset(
            tf.distribute.get_strategy(), 'cifar10', 'train', 8,
            input_context=context),
        'makes the input_context')
    with pytest.raises(ValueError, match='start_index must be'):
        data.checkerboard_dataset(16, start_index=True)
    _assert_value_error(lambda: data.checkerboard_dataset(16, seed=1.5),
                        'seed must be a Python int or None')


def test_a_no_proxy_setting_alone_is_no_proxy(tmp_path, monkeypatch):
    """Only a configured proxy skips the probe of the download hosts:
    `no_proxy` alone (hosts to reach directly) is not one."""
    for variable in list(os.environ):
        if variable.lower().endswith('_proxy'):
            monkeypatch.delenv(variable)
    monkeypatch.setenv('no_proxy', 'localhost,127.0.0.1')

    def getaddrinfo(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, 'Name or service not known')

    monkeypatch.setattr(socket, 'getaddrinfo', getaddrinfo)
    # pylint: disable=protected-access
    builder = pipelines._builder('cifar10', str(tmp_path))
    assert pipelines._unresolvable_host(builder) == 'www.cs.toronto.edu'


def test_file_order_is_reshuffled_every_epoch(four_file_dir):
    """With shuffle=True the order of a split's files is new every epoch
    (seen with a 1-example shuffle buffer, which leaves the examples in
    file order), while the same seed gives the same sequence of epochs."""
    def epochs(seed):
        ds = data.image_dataset('photo_patches/32x32', 'test', 41,
                                data_dir=four_file_dir, seed=seed,
                                shuffle_buffer=1)
        images = np.concatenate(_take(ds, 4))
        return [[image.tobytes() for image in images[i:i + 82]]
                for i in (0, 82)]

    for seed in (1, 2):
        first, second = epochs(seed)
        assert sorted(first) == sorted(second)
        assert first != second
        assert epochs(seed) == [first, second]


def test_pipelines_ask_tf_data_for_a_deterministic_order(mock_cifar):
    """A seed makes the order deterministic: the pipelines decode in
    parallel, so they must not let tf.data reorder elements."""
    del mock_cifar
    for ds in (data.image_dataset('cifar10', 'train', 8, seed=1),
               data.checkerboard_dataset(8)):
        assert ds.options().deterministic is not False


def test_an_image_feature_that_is_no_image_is_refused(tmp_path):
    """A data set whose 'image' feature is not a TFDS Image (here a dict
    of features) has no 'image' feature in image_dataset's sense: the
    ValueError says so and lists the supported data sets."""
    _assert_value_error(
        lambda: data.image_shape('segment_anything', data_dir=str(tmp_path)),
        "'segment_anything' has no 'image' feature; supported: ")


def test_preparing_logs_its_duration(tmp_path, caplog):
    """The first use of a data set logs how long preparing it took (a
    duration, never negative)."""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger='absl')
    data.image_dataset('photo_patches/32x32', 'test', 8,
                       data_dir=str(tmp_path), repeat=False)
    durations = [float(message.rsplit(' in ', 1)[1][:-len(' s.')])
                 for message in caplog.messages
                 if message.startswith('Prepared photo_patches/32x32/')]
    assert len(durations) == 1 and durations[0] >= 0.0, caplog.text


def test_a_failed_preparation_names_the_default_directory(tmp_path,
                                                          monkeypatch):
    """Without data_dir the error names the directory TFDS used (its
    default), not `None`."""
    monkeypatch.setattr(tfds.core.constants, 'DATA_DIR', str(tmp_path))

    def download_and_prepare(self, *args, **kwargs):
        raise ConnectionError('no network here')

    monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare',
                        download_and_prepare)
    with pytest.raises(data.DatasetUnavailableError) as info:
        data.image_dataset('cifar10', 'train', 8)
    assert f' in {tmp_path}' in str(info.value), info.value


def test_a_resumed_run_takes_every_seed_a_fresh_one_takes(mock_cifar):
    """Any Python int seeds the image pipelines, negative or beyond 64
    bits; resuming such a run mixes it with the step like any other."""
    del mock_cifar
    for seed in (-3, 2**64 + 3):
        inputs = training.training_inputs('cifar10', 8, init_batch_size=8,
                                          seed=seed)
        fresh = _ids(_take(inputs.train_input_fn(None), 5))
        try:
            resumed = _ids(_take(inputs.train_input_fn(None, 5), 5))
        except ValueError as e:
            pytest.fail(f'seed {seed} cannot be resumed: {e}')
        assert sorted(resumed) == sorted(fresh) == list(range(_NUM_FAKE))
        assert resumed != fresh


def test_a_name_that_is_no_string_is_an_unknown_data_set(tmp_path):
    """image_shape and image_dataset refuse a name that is not a string
    with their ValueError for unknown data sets."""
    for name in (10, None, b'cifar10'):
        for make in (lambda: data.image_shape(name, data_dir=str(tmp_path)),
                     lambda: data.image_dataset(name, 'train', 8,
                                                data_dir=str(tmp_path))):
            _assert_value_error(make, f'Unknown dataset {name!r}')


def test_checkerboard_sample_of_no_points():
    # num_samples >= 0: zero points is an empty `[0, 2]` float32 sample,
    # only a negative count is refused.
    points = data.sample_checkerboard(0, seed=0)
    assert points.shape == (0, 2) and points.dtype == np.float32
    with pytest.raises(ValueError, match='num_samples must be >= 0; got -1'):
        data.sample_checkerboard(-1, seed=0)


def test_training_inputs_train_on_the_rest_of_the_held_out_split(
        mock_cifar):
    """With validation_size=N the training stream serves the training
    split without its last N images (the evaluation's): one epoch holds
    each of the rest once and none of the held-out ones."""
    del mock_cifar
    inputs = training.training_inputs('cifar10', 6, init_batch_size=8,
                                      seed=3, validation_size=10)
    epoch = _ids(_take(inputs.train_input_fn(None), 5))  # 30 images.
    assert sorted(epoch) == list(range(_NUM_FAKE - 10))


def test_training_inputs_shard_images_over_the_input_pipelines(mock_cifar):
    """Under tf.distribute the image inputs of training_inputs keep one
    shard per input pipeline, batched with the per-replica batch size:
    one pass of every pipeline's evaluation pipeline scores each test image
    once, and one epoch of the training streams shows each training image
    once (training_inputs' global_batch_size is the global batch)."""
    del mock_cifar
    inputs = training.training_inputs('cifar10', 8, init_batch_size=8,
                                      seed=3)
    evaluated, trained = [], []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(2, pipeline_id, 2)
        batches = list(inputs.eval_input_fn(context))
        assert max(len(batch) for batch in batches) == 4  # 8 / 2.
        evaluated += _ids(batches)
        train = inputs.train_input_fn(context)
        assert train.element_spec.shape[0] == 4
        trained += _ids(_take(train, _NUM_FAKE // 2 // 4))
    assert sorted(evaluated) == list(range(_NUM_FAKE))
    assert sorted(trained) == list(range(_NUM_FAKE))


def test_a_config_size_gives_height_then_width():
    """A data set whose 'image' feature has no fixed size takes it from its
    config named 'HxW': height first (image_shape gives `(H, W, C)`)."""
    builder = mock.Mock(builder_config=mock.Mock())
    builder.builder_config.name = '24x40'
    builder.info.features = {'image': tfds.features.Image(shape=(None, None,
                                                                 3))}
    # pylint: disable-next=protected-access
    assert pipelines._image_shape(builder) == (24, 40, 3)


def test_images_of_a_config_size_have_a_static_shape():
    """Downsampled ImageNet's TFDS images have no fixed size: the batches
    still have the static shape `[B, H, W, C]` of its `HxW` config."""
    with tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset):
        ds = data.image_dataset('downsampled_imagenet/32x32', 'train', 4,
                                seed=0)
        assert ds.element_spec == tf.TensorSpec([4, 32, 32, 3], tf.uint8)
        assert next(iter(ds)).shape == (4, 32, 32, 3)


def _fake_builder(monkeypatch, name, dtype=np.uint8, splits=()):
    """Makes `tfds.builder` give a stand-in builder of a data set `name`
    of 8x8 grey images of `dtype`, prepared with `splits`."""
    builder = mock.Mock(builder_config=None)
    builder.name = name
    builder.info.full_name = f'{name}/1.0.0'
    builder.info.features = tfds.features.FeaturesDict(
        {'image': tfds.features.Image(shape=(8, 8, 1), dtype=dtype)})
    builder.info.splits = {split: mock.Mock(num_examples=10)
                           for split in splits}
    monkeypatch.setattr(tfds, 'builder', lambda name, data_dir=None: builder)


def test_a_data_set_of_other_than_uint8_images_is_refused(monkeypatch):
    """image_dataset reads uint8 images only: a data set whose 'image'
    feature holds another dtype is refused with a ValueError naming it."""
    _fake_builder(monkeypatch, 'sixteen_bits', dtype=np.uint16)
    for make in (lambda: data.image_shape('sixteen_bits'),
                 lambda: data.image_dataset('sixteen_bits', 'train', 8)):
        _assert_value_error(make, "'sixteen_bits' has uint16 images, not "
                                  'uint8')


def test_checkerboard_dataset_draws_the_two_coordinates_independently():
    """Uniform on the black squares: inside its square a point's two
    offsets from the corner are independent (a shared stream would put
    every point on the square's diagonal)."""
    points = np.concatenate(_take(data.checkerboard_dataset(1024, seed=1),
                                  8))
    offsets = (points + 4.0) % 2.0
    assert abs(np.corrcoef(offsets.T)[0, 1]) < 0.05


def test_an_unknown_config_names_the_reason_alone():
    """The ValueError for an unknown name keeps TFDS's reason, not the
    header of TFDS's list of near matches (which it leaves out)."""
    _assert_value_error(
        lambda: data.image_shape('cifar10/64x64'),
        "Unknown dataset 'cifar10/64x64' (BuilderConfig 64x64 not found")
    with pytest.raises(ValueError) as info:
        data.image_shape('cifar10/64x64')
    assert 'closely match' not in str(info.value)


def test_distributed_image_dataset_checks_the_prepared_split_first(
        tmp_path):
    """A validation size that the split, once prepared, cannot spare is
    refused with image_dataset's ValueError before any pipeline is built
    (distributed_image_dataset's Raises)."""
    strategy = tf.distribute.get_strategy()
    with mock.patch.object(strategy, 'distribute_datasets_from_function'
                           ) as distribute, pytest.raises(
                               ValueError, match='leaves no training'):
        data.distributed_image_dataset(
            strategy, 'photo_patches/32x32', 'train', 8,
            data_dir=str(tmp_path), validation_size=10_000)
    distribute.assert_not_called()


def test_a_download_host_is_probed_by_its_name(monkeypatch):
    """The probe of the download hosts looks up each URL's host name (not
    its port or credentials) and reports the one DNS cannot resolve."""
    for variable in list(os.environ):
        if variable.lower().endswith('_proxy'):
            monkeypatch.delenv(variable)
    looked_up = []

    def getaddrinfo(host, *args, **kwargs):
        looked_up.append(host)
        if host == 'data.invalid':
            raise socket.gaierror(socket.EAI_NONAME, 'Name not known')
        return []

    monkeypatch.setattr(socket, 'getaddrinfo', getaddrinfo)
    builder = mock.Mock(url_infos={
        'https://user@cdn.example.org:8443/a.tgz': None,
        'http://data.invalid:8080/b.tgz': None})
    # pylint: disable-next=protected-access
    assert pipelines._unresolvable_host(builder) == 'data.invalid'
    assert looked_up == ['cdn.example.org', 'data.invalid']


def _dataset_nodes(ds):
    """The nodes of the graph of `ds`, by name."""
    graph = tf.compat.v1.GraphDef()
    # pylint: disable-next=protected-access
    graph.ParseFromString(ds._as_serialized_graph().numpy())
    return {node.name: node for node in graph.node}


def test_pipelines_prefetch_only_when_asked(mock_cifar):
    """The default prefetches batches (a tf.data prefetch more than the
    TFDS reading has); prefetch=False builds the pipeline without it."""
    del mock_cifar

    def prefetches(prefetch):
        ds = data.image_dataset('cifar10', 'train', 8, seed=1,
                                prefetch=prefetch)
        return sum(node.op == 'PrefetchDataset'
                   for node in _dataset_nodes(ds).values())

    assert prefetches(True) == prefetches(False) + 1


def test_the_default_shuffle_buffer_holds_10000_examples(mock_cifar):
    """image_dataset's shuffle_buffer: 10,000 examples by default."""
    del mock_cifar
    nodes = _dataset_nodes(data.image_dataset('cifar10', 'train', 8,
                                              seed=1))
    shuffle, = [node for node in nodes.values()
                if node.op.startswith('ShuffleDataset')]
    size = nodes[shuffle.input[1].split(':')[0]]  # (input, buffer_size, ...)
    assert tf.make_ndarray(size.attr['value'].tensor) == 10_000


def test_a_shuffle_buffer_of_one_keeps_the_order_read(mock_cifar):
    """shuffle_buffer is the number of examples shuffled at a time: with a
    buffer of one the examples come in the order read (here the mocked
    split's one file, in order)."""
    del mock_cifar
    ds = data.image_dataset('cifar10', 'train', 8, seed=1, shuffle_buffer=1,
                            repeat=False)
    assert _ids(ds) == list(range(_NUM_FAKE))


def test_the_splits_of_a_prepared_data_set_are_checked(monkeypatch):
    """Any TFDS image data set works: once prepared, its own splits decide
    which of 'validation' and 'test' it has, refused with a ValueError that
    lists them."""
    _fake_builder(monkeypatch, 'two_splits', splits=('train', 'test'))
    _assert_value_error(
        lambda: data.image_dataset('two_splits', 'validation', 8),
        "Dataset 'two_splits/1.0.0' has no 'validation' split (splits: "
        'train, test)')
    _fake_builder(monkeypatch, 'no_test', splits=('train', 'validation'))
    _assert_value_error(lambda: data.image_dataset('no_test', 'test', 8),
                        "Dataset 'no_test/1.0.0' has no test split (splits: "
                        'train, validation)')


def test_unseeded_pipelines_shuffle_anew_every_time(mock_cifar):
    """seed=None is a random order: pipelines built without a seed do not
    all serve one same order."""
    del mock_cifar
    orders = {tuple(_ids(data.image_dataset('cifar10', 'train', 8,
                                            repeat=False)))
              for _ in range(3)}
    assert len(orders) > 1


def test_too_large_a_validation_size_names_the_split_s_size(photo_dir):
    """The ValueError for a validation size that leaves no training
    examples gives the number of examples the train split has."""
    num_train = tfds.builder('photo_patches/32x32', data_dir=photo_dir
                             ).info.splits['train'].num_examples
    _assert_value_error(
        lambda: data.image_dataset('photo_patches/32x32', 'train', 8,
                                   data_dir=photo_dir, validation_size=5000),
        f'validation_size=5000 leaves no training examples in '
        f"'photo_patches/32x32/1.0.0' ({num_train} in its train split).")


def test_numpy_integer_batch_sizes_are_batch_sizes(mock_cifar):
    """A batch size is a positive integer, a numpy one (e.g. from a sweep's
    array of values) as well as a Python int."""
    del mock_cifar
    context = tf.distribute.InputContext(1, 0, 2)
    for size in (np.int64(8), np.int32(8)):
        try:
            images = data.image_dataset('cifar10', 'train', size, seed=0)
            points = data.checkerboard_dataset(size, input_context=context)
        except ValueError as e:
            pytest.fail(f'batch size {size!r} refused: {e}')
        assert images.element_spec.shape[0] == 8
        assert points.element_spec.shape[0] == 4


class _InnerEdgeGenerator(np.random.Generator):
    """Draws of x just below the inner edges x = -2, 0, 2 (float64 values
    that round onto the edge in float32), in turn."""

    def uniform(self, low=0.0, high=1.0, size=None):
        if (low, high) != (-4.0, 4.0):
            return super().uniform(low, high, size)
        return np.nextafter(np.resize([-2.0, 0.0, 2.0], size), -np.inf)


def test_checkerboard_points_at_the_inner_edges_stay_on_black():
    """Every sampled point lies on a black square: a square is decided on
    the float32 coordinate returned, also where the float64 draw just
    below an inner edge rounds onto it."""
    points = data.sample_checkerboard(
        12, _InnerEdgeGenerator(np.random.PCG64(0)))
    assert np.all(data.checkerboard_log_prob(points)
                  == data.CHECKERBOARD_LOG_LIKELIHOOD)


def test_is_prepared_looks_in_data_dir(photo_dir, tmp_path):
    """is_prepared answers for the given data_dir: photo_patches is
    prepared in the module's directory, not in an empty one."""
    assert data.is_prepared('photo_patches/32x32', data_dir=photo_dir)
    assert not data.is_prepared('photo_patches/32x32',
                                data_dir=str(tmp_path))


def test_the_checkerboard_init_batch_has_init_batch_size_points():
    """training_inputs' init_batch_size examples for the initialisation,
    drawn with `seed` and unsharded: the checkerboard's init batch is
    `init_batch_size` points of sample_checkerboard(seed), whatever the
    global batch size."""
    for global_batch_size, init_batch_size in ((8, 16), (96, 64)):
        board = training.training_inputs('checkerboard', global_batch_size,
                                         init_batch_size=init_batch_size,
                                         seed=5)
        np.testing.assert_array_equal(
            board.init_batch,
            data.sample_checkerboard(init_batch_size, seed=5))


def test_the_checkerboard_refuses_any_validation_size():
    """validation_size is for image datasets only: the checkerboard refuses
    any other than 0, a negative one included, by the same ValueError
    (not quietly evaluating on its test set)."""
    for validation_size in (10, -1):
        _assert_value_error(
            lambda size=validation_size: training.training_inputs(
                'checkerboard', 8, validation_size=size),
            'validation_size applies to image datasets')


def test_an_unlisted_data_set_s_splits_are_checked_once_prepared(
        tmp_path, monkeypatch):
    """Any TFDS image data set works: before it is prepared the splits of
    one that is not among the supported ones are unknown, so no split is
    refused then; a failed preparation is the DatasetUnavailableError."""
    def download_and_prepare(self, *args, **kwargs):
        raise ConnectionError('no network here')
    monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare',
                        download_and_prepare)
    monkeypatch.setattr(socket, 'getaddrinfo', lambda *args, **kwargs: [])
    for split, validation_size in (('test', 0), ('validation', 0),
                                   ('train', 5), ('validation', 5)):
        with pytest.raises(Exception) as info:
            data.image_dataset('fashion_mnist', split, 8,
                               data_dir=str(tmp_path),
                               validation_size=validation_size)
        assert isinstance(info.value, data.DatasetUnavailableError), \
            (split, validation_size, info.value)


def test_a_validation_size_leaves_the_test_split_whole(mock_cifar):
    """validation_size holds out training images only: 'test' is the whole
    test split, whatever the validation size."""
    del mock_cifar
    batches = list(data.image_dataset('cifar10', 'test', 8, shuffle=False,
                                      repeat=False, drop_remainder=False,
                                      validation_size=10))
    assert _ids(batches) == list(range(_NUM_FAKE))
    assert all((b.numpy()[:, 0, 0, 1] == 1).all() for b in batches)


@pytest.mark.parametrize('shape, config', [
    ((None, None, None), '24x40'),  # Channels vary.
    ((32, None, 3), None),          # Width varies.
    ((None, None, 3), '32x32_crops'),  # A config not named 'HxW'.
])
def test_images_of_varying_size_are_refused(monkeypatch, shape, config):
    """image_shape's Raises: a data set whose images vary in size (any of
    height, width or channels) and whose config is not named 'HxW' is
    refused with a ValueError naming it."""
    _fake_builder(monkeypatch, 'varying')
    builder = tfds.builder('varying')
    builder.info.features = tfds.features.FeaturesDict(
        {'image': tfds.features.Image(shape=shape)})
    if config is not None:
        builder.builder_config = mock.Mock()
        builder.builder_config.name = config
    _assert_value_error(lambda: data.image_shape('varying'),
                        "'varying/1.0.0' has images of varying size")


def test_images_of_varying_size_are_refused_before_preparing(monkeypatch):
    """image_dataset and distributed_image_dataset refuse a data set of
    varying image size with their ValueError before preparing it."""
    _fake_builder(monkeypatch, 'varying')
    builder = tfds.builder('varying')
    builder.info.features = tfds.features.FeaturesDict(
        {'image': tfds.features.Image(shape=(None, None, 3))})
    builder.is_prepared.return_value = False
    builder.download_and_prepare.side_effect = ConnectionError('offline')
    for make in (lambda: data.image_dataset('varying', 'train', 8),
                 lambda: data.distributed_image_dataset(
                     tf.distribute.get_strategy(), 'varying', 'train', 8)):
        _assert_value_error(make, 'has images of varying size')
    builder.download_and_prepare.assert_not_called()


def test_numpy_integer_pipeline_options_are_integers(photo_dir):
    """num_bits, shuffle_buffer and the checkerboard's start_index are
    integers, numpy ones (e.g. from a sweep's array of values or a step
    counter) as well as Python ints."""
    kwargs = dict(data_dir=photo_dir, repeat=False, seed=1)
    whole = _take(data.checkerboard_dataset(8, seed=1), 3)
    for value in (np.int64(2), np.int32(2)):
        try:
            data.image_dataset('photo_patches/32x32', 'test', 8,
                               num_bits=value, **kwargs)
            data.image_dataset('photo_patches/32x32', 'test', 8,
                               shuffle_buffer=value, **kwargs)
            resumed = _take(data.checkerboard_dataset(
                8, seed=1, start_index=value), 1)
        except ValueError as e:
            pytest.fail(f'{value!r} refused: {e}')
        np.testing.assert_array_equal(resumed[0], whole[2])


def test_a_boolean_validation_size_is_refused(mock_cifar):
    """validation_size is an integer >= 0: True is no size (as it is no
    batch size), refused by image_dataset's ValueError."""
    del mock_cifar
    _assert_value_error(
        lambda: data.image_dataset('cifar10', 'train', 8,
                                   validation_size=True),
        'validation_size must be an integer >= 0; got True.')


def test_a_tfds_builder_leaves_no_temporary_directory(
        tmp_path, monkeypatch):
    """The metadata TFDS fetches into a temporary directory for a data set
    not yet prepared (and never removes) is removed: image_shape and
    is_prepared leave the temporary directory as they found it."""
    scratch = tmp_path / 'tmp'
    scratch.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(scratch))
    data_dir = str(tmp_path / 'data')
    assert data.image_shape('cifar10', data_dir=data_dir) == (32, 32, 3)
    assert not data.is_prepared('cifar10', data_dir=data_dir)
    assert tempfile.tempdir == str(scratch)
    assert not list(scratch.iterdir())


def test_a_held_out_split_in_enough_files_is_sharded_by_file(
        four_file_dir):
    """The held-out images are a split of their own: when they span at
    least as many files as there are pipelines (here the last 500 of the
    944 training images, in 3 of the 4 files), each pipeline reads only its
    own files of them."""
    builder = tfds.builder('photo_patches/32x32', data_dir=four_file_dir)
    files = builder.info.splits['train[-500:]'].file_instructions
    assert len(files) == 3
    shards = []
    for pipeline_id in range(2):
        ds = data.image_dataset(
            'photo_patches/32x32', 'validation', 4,
            input_context=tf.distribute.InputContext(2, pipeline_id, 2),
            data_dir=four_file_dir, repeat=False, drop_remainder=False,
            validation_size=500, seed=1)
        shards.append(sum(len(batch) for batch in ds))
    assert shards == [sum(f.take for f in files[i::2]) for i in range(2)]


def test_checkerboard_log_prob_of_float64_points_near_the_edges():
    """checkerboard_log_prob is the density at the points given: a float64
    point just inside a square's upper edge (which float32 would round onto
    the edge) is in that square."""
    points = [[2.0 - 1e-12, -3.0],         # Column 2, row 0: black.
              [-2.0 - 1e-12, -3.0],        # Column 0, row 0: black.
              [-3.0, -1e-12],              # Column 0, row 1: white.
              [4.0 - 1e-12, 4.0 - 1e-12]]  # Column 3, row 3: black.
    ll = data.CHECKERBOARD_LOG_LIKELIHOOD
    np.testing.assert_array_equal(data.checkerboard_log_prob(points),
                                  [ll, ll, -np.inf, ll])


def test_photo_patches_stores_the_patches_pixel_for_pixel(photo_dir):
    """The examples of the photo_patches data set are the patches of
    `vflow_tfp.data.photo_patches`, stored losslessly: a split holds
    exactly its patches, pixel for pixel."""
    for split in ('train', 'test'):
        stored = tfds.load('photo_patches/32x32', split=split,
                           data_dir=photo_dir)
        assert collections.Counter(
            example['image'].tobytes()
            for example in tfds.as_numpy(stored)) == collections.Counter(
                patch.tobytes() for patch in data.photo_patches(32, split))


def test_image_dataset_checks_the_split_once_prepared(tmp_path):
    """A validation size that the train split turns out, once prepared on
    first use, not to have room for is refused with image_dataset's
    ValueError (as for a data set prepared beforehand)."""
    _assert_value_error(
        lambda: data.image_dataset('photo_patches/32x32', 'train', 8,
                                   data_dir=str(tmp_path),
                                   validation_size=10_000),
        'validation_size=10000 leaves no training examples')


def test_checkerboard_seeds_beyond_int64_wrap_into_it():
    """checkerboard_dataset's seed is any Python int: one outside the int64
    range streams as the int64 seed it wraps to (modulo 2**64), not a
    conversion error."""
    for seed, wrapped in ((2**63, -2**63), (2**64 + 5, 5),
                          (-2**63 - 1, 2**63 - 1)):
        try:
            points = _take(data.checkerboard_dataset(8, seed=seed), 2)
        except ValueError as e:
            pytest.fail(f'seed {seed} refused: {e}')
        np.testing.assert_array_equal(
            points, _take(data.checkerboard_dataset(8, seed=wrapped), 2))


if __name__ == '__main__':
    # Pytest-style tests: a plain `python tests/test_data.py` (Bazel's
    # py_test) runs them.
    sys.exit(pytest.main([__file__]))
