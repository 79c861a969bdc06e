import numpy as np
import pytest

from medcondense.errors import ConfigError
from medcondense.ingest import window as win


def test_presets_and_explicit():
    assert win.parse_window("brain") == win.WindowSpec("fixed", 40.0, 80.0, "brain")
    spec = win.parse_window("-600/1500")
    assert (spec.center, spec.width) == (-600.0, 1500.0)
    assert win.parse_window("Percentile").kind == "percentile"


@pytest.mark.parametrize("bad", ["brian", "40/0", "40-400", ""])
def test_unknown_preset_is_a_config_error(bad):
    if bad == "":
        assert win.parse_window(bad).kind == "auto"
        return
    with pytest.raises(ConfigError, match="window"):
        win.parse_window(bad)


def test_auto_resolution():
    auto = win.parse_window("auto")
    assert win.resolve(auto, modality="CT", voi=(35.0, 350.0)).name == "voi"
    ct = win.resolve(auto, modality="CT", voi=None)
    assert (ct.center, ct.width) == win.PRESETS["abdomen"]
    assert win.resolve(auto, modality="MR", voi=(1, 2)).kind == "percentile"
    assert win.resolve(win.parse_window("voi"), modality="MR", voi=None).kind == "percentile"
    rgb = win.resolve(auto, modality="XC", voi=None, colour_bits=8)
    assert rgb.center - rgb.width / 2 == 0 and rgb.center + rgb.width / 2 == 255


def test_apply_and_invert():
    values = np.array([-1000.0, 0.0, 40.0, 80.0, 3000.0])
    out = win.apply_window(values, win.parse_window("brain"))
    np.testing.assert_allclose(out, [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(win.invert(out, win.parse_window("brain")), [1, 1, 0.5, 0, 0])
    pct = win.apply_window(np.arange(1000.0), win.WindowSpec("percentile"), (1, 99))
    assert pct.min() == 0 and pct.max() == 1
    raw = win.apply_window(values, win.WindowSpec("none"))
    np.testing.assert_array_equal(raw, values.astype(np.float32))


def test_first_value_of_multivalued():
    from pydicom.multival import MultiValue
    from pydicom.valuerep import DSfloat

    assert win.first_value(MultiValue(DSfloat, ["40", "400"])) == 40.0
    assert win.first_value("35") == 35.0
    assert win.first_value(None) is None
