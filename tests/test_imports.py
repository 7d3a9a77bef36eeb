"""The packages load their modules on first use; settings need no TF."""

import subprocess
import sys

import pytest

import vflow_tfp
from vflow_tfp import models
from vflow_tfp import training


def _fresh_python(code):
    """The output of `code` run by a new Python process, which must pass."""
    run = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_the_packages_and_the_settings_modules_start_no_tensorflow():
    # What bin/train.py and bin/toy_experiment.py check their flags with.
    code = ('import sys\n'
            'import vflow_tfp, vflow_tfp.models, vflow_tfp.training\n'
            'from vflow_tfp.models import catalog\n'
            'from vflow_tfp.training import config\n'
            'config.TrainConfig("tiny_vflow", "/tmp/run").check_settings()\n'
            'assert catalog.describe("tiny_vflow")\n'
            'print(sorted(m for m in ("tensorflow", "tensorflow_probability",'
            ' "tf_keras") if m in sys.modules))\n')
    assert _fresh_python(code) == '[]\n'


@pytest.mark.parametrize('package', [vflow_tfp, models, training],
                         ids=lambda p: p.__name__)
def test_every_public_name_loads_and_is_listed(package):
    for name in package.__all__:
        value = getattr(package, name)
        assert value is not None
        assert name in dir(package)
    with pytest.raises(AttributeError, match='no attribute'):
        getattr(package, 'no_such_name')


def test_lazy_names_are_the_modules_own_objects():
    # pylint: disable=g-import-not-at-top
    from vflow_tfp import bijectors
    from vflow_tfp import initialization
    from vflow_tfp.models import catalog
    from vflow_tfp.models import presets
    from vflow_tfp.models import vflow
    from vflow_tfp.training import config
    from vflow_tfp.training import loop
    assert vflow_tfp.bijectors is bijectors
    assert vflow_tfp.data_dependent_init is initialization.data_dependent_init
    assert models.VFlow is vflow.VFlow
    assert training.TrainConfig is config.TrainConfig
    assert training.Trainer is loop.Trainer
    # A module of the package outside `__all__` loads as an attribute too.
    assert training.schedules.WarmupHoldDecay is training.WarmupHoldDecay
    assert presets.names() == catalog.names()
    assert presets.describe('tiny_vflow') == catalog.describe('tiny_vflow')
    assert presets.TOY_DIMS == catalog.TOY_DIMS
    with pytest.raises(ValueError, match="Unknown preset 'tiny_vflo'"):
        catalog.describe('tiny_vflo')


def test_a_fresh_import_lists_and_loads_names_not_yet_used():
    # In this process most modules are loaded already; a new one shows what
    # a user's first `dir()` and first attribute access get.
    code = (
        'import sys\n'
        'import vflow_tfp, vflow_tfp.models, vflow_tfp.training\n'
        'for p in (vflow_tfp, vflow_tfp.models, vflow_tfp.training):\n'
        '    missing = set(p.__all__) - set(dir(p))\n'
        '    assert not missing, (p.__name__, missing)\n'
        'for name in ("vflow_tfp.file_io", "vflow_tfp.scoring",\n'
        '             "vflow_tfp.training.schedules"):\n'
        '    assert name not in sys.modules, name\n'
        'assert vflow_tfp.file_io is sys.modules["vflow_tfp.file_io"]\n'
        'assert vflow_tfp.scoring is sys.modules["vflow_tfp.scoring"]\n'
        'assert (vflow_tfp.training.schedules\n'
        '        is sys.modules["vflow_tfp.training.schedules"])\n'
        'print("ok")\n')
    assert _fresh_python(code) == 'ok\n'


def test_an_unknown_preset_s_message_lists_its_family_or_all():
    # check_name: "listing the presets of its family (its first word), or
    # all of them".
    from vflow_tfp.models import catalog  # pylint: disable=g-import-not-at-top
    with pytest.raises(ValueError) as raised:
        catalog.check_name('vflow_cifar100')
    listed = str(raised.value).split('Presets: ')[1].rstrip('.').split(', ')
    assert listed == [n for n in catalog.names() if n.startswith('vflow_')]
    # No family: all of them, also for a name that is not a string (say a
    # settings file's null or list), which is unknown too (ValueError).
    for name in ('nonsense', None, ['tiny_vflow'], {'name': 'tiny_vflow'}):
        with pytest.raises(Exception) as raised:
            catalog.check_name(name)
        assert raised.type is ValueError, repr(raised.value)
        assert str(raised.value).endswith(', '.join(catalog.names()) + '.')


@pytest.mark.parametrize('package', [vflow_tfp, models, training],
                         ids=lambda p: p.__name__)
def test_a_missing_name_is_reported_as_python_reports_it(package):
    # The packages' `__getattr__` names the package and the missing
    # attribute, in the words of Python's own message for a module.
    with pytest.raises(AttributeError) as raised:
        getattr(package, 'no_such_name')
    assert str(raised.value) == (
        f"module {package.__name__!r} has no attribute 'no_such_name'")
