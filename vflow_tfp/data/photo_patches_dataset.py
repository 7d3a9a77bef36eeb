"""`photo_patches`: TFDS builder of RGB patches of scikit-image's photographs.

The only image data set of this package that builds offline: its examples
come from `vflow_tfp.data.photo_patches`, which cuts the colour photographs
bundled with scikit-image (no download) into non-overlapping square patches.
Train and test patches come from different photographs (see
`vflow_tfp.data.photos`). Importing `vflow_tfp.data` registers the builder,
so that

```python
import vflow_tfp.data  # registers 'photo_patches'
builder = tfds.builder('photo_patches/16x16', data_dir=data_dir)
builder.download_and_prepare()     # a few seconds, no network access
ds = tfds.load('photo_patches/16x16', split='train', data_dir=data_dir)
```

works, and `vflow_tfp.data.image_dataset('photo_patches/16x16', ...)` prepares
it on first use.

| config | train patches | test patches |
|---|---|---|
| `8x8` | 15,606 | 1,429 |
| `16x16` | 3,890 | 342 |
| `32x32` | 944 | 82 |
"""

import dataclasses

import tensorflow_datasets as tfds

from vflow_tfp.data import photos

__all__ = ['PATCH_SIZES', 'PhotoPatches', 'PhotoPatchesConfig']

PATCH_SIZES = (8, 16, 32)

# Shuffle seed and downscaling factor passed to `photos.photo_patches`; part
# of version 1.0.0 of the data set.
_SEED = 0
_DOWNSCALE = 2

_DESCRIPTION = """\
Square RGB patches (uint8) of the colour photographs bundled with
scikit-image (`skimage.data`). Every photograph is downscaled 2x by averaging
2x2 pixel blocks and cut into non-overlapping patches. The training patches
come from the photographs astronaut, hubble_deep_field, immunohistochemistry,
retina, rocket and the left view of stereo_motorcycle; the test patches from
chelsea and coffee, so no test patch comes from a training photograph. The
`photo` feature names each patch's photograph. Built offline from the
installed scikit-image package, for quick experiments with image flows.
"""

_CITATION = """\
@article{scikit-image,
  title = {scikit-image: image processing in {P}ython},
  author = {van der Walt, {S}t\\'efan and {S}ch\\"onberger, {J}ohannes {L}.
            and {Nunez-Iglesias}, {J}uan and {B}oulogne, {F}ran\\c{c}ois and
            {W}arner, {J}oshua {D}. and {Y}ager, {N}eil and {G}ouillart,
            {E}mmanuelle and {Y}u, {T}ony and the scikit-image contributors},
  journal = {PeerJ},
  volume = {2},
  pages = {e453},
  year = {2014},
  doi = {10.7717/peerj.453},
}
"""

_HOMEPAGE = 'https://scikit-image.org/docs/stable/api/skimage.data.html'


@dataclasses.dataclass
class PhotoPatchesConfig(tfds.core.BuilderConfig):
    """A patch size of `photo_patches`; the config is named `'PxP'`."""

    patch_size: int = 16


class PhotoPatches(tfds.core.GeneratorBasedBuilder):
    """RGB patches of scikit-image's photographs; train/test by photograph."""

    VERSION = tfds.core.Version('1.0.0')
    RELEASE_NOTES = {
        '1.0.0': 'Initial release: 8x8, 16x16 and 32x32 patches of the '
                 'scikit-image photographs downscaled 2x.',
    }
    BUILDER_CONFIGS = [
        PhotoPatchesConfig(
            name=f'{size}x{size}',
            description=f'Non-overlapping {size}x{size} RGB patches.',
            patch_size=size)
        for size in PATCH_SIZES
    ]
    # Nothing is downloaded, so there are no URL checksums to look up. This
    # also skips the lookup of this file's path that TFDS 4.9.10 does for
    # them, which needs the undeclared package `importlib_resources`
    # (tensorflow/datasets#11212).
    url_infos = None

    def _info(self):
        size = self.builder_config.patch_size
        return self.dataset_info_from_configs(
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict({
                'image': tfds.features.Image(shape=(size, size, 3)),
                'photo': tfds.features.ClassLabel(
                    names=list(photos.TRAIN_PHOTOS + photos.TEST_PHOTOS)),
            }),
            supervised_keys=None,
            homepage=_HOMEPAGE,
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        return {
            'train': self._generate_examples('train'),
            'test': self._generate_examples('test'),
        }

    def _generate_examples(self, split):
        patches, sources = photos.photo_patches(
            self.builder_config.patch_size, split, seed=_SEED,
            downscale=_DOWNSCALE, return_sources=True)
        for index, (patch, source) in enumerate(zip(patches, sources)):
            yield index, {'image': patch, 'photo': str(source)}
