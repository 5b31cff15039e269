"""ablations.py's variants expand to the config overrides they name."""
from ablations import VARIANTS, overrides_for


def test_variants_expand_per_hyperparameter():
    hypers = ["dropout_in", "cutout_length"]
    assert overrides_for("base", hypers, 0.03) == []
    assert overrides_for("hyper_lr ×3", hypers, 0.03) == ["train.hyper_lr=0.09"]
    assert overrides_for("σ0 0.5", hypers, 0.03) == ["hypers.dropout_in.scale=0.5", "hypers.cutout_length.scale=0.5"]
    assert overrides_for("dropouts start at 0.3", hypers, 0.03) == ["hypers.dropout_in.init=0.3"]
    assert all(isinstance(overrides_for(v, hypers, 0.03), list) for v in VARIANTS)
