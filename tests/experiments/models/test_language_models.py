"""The LSTM language model: parameter count by hand, tying, initialisation, hidden-state shapes, bad options."""

from __future__ import annotations

import pytest
import torch

from experiments.models.language import build_language_model


def lstm_parameters(vocab: int, emsize: int, nhid: int, layers: int, tied: bool) -> int:
    """Embedding V x E; per layer 4 gates of (input + hidden) weights and two biases; decoder H x V + V."""
    count = vocab * emsize
    for layer in range(layers):
        inputs = emsize if layer == 0 else nhid
        count += 4 * nhid * (inputs + nhid) + 2 * 4 * nhid
    return count + (0 if tied else nhid * vocab) + vocab


@pytest.mark.parametrize("emsize, nhid, layers, tied", [(650, 650, 2, False), (200, 200, 2, True), (64, 128, 1, False)])
def test_parameter_count_matches_the_formula(emsize, nhid, layers, tied):
    model = build_language_model("lstm", vocab_size=10_000, emsize=emsize, nhid=nhid, layers=layers, tied=tied)
    assert sum(p.numel() for p in model.parameters()) == lstm_parameters(10_000, emsize, nhid, layers, tied)


def test_zaremba_medium_has_about_twenty_million_parameters():
    model = build_language_model("lstm", vocab_size=10_000)  # the config's defaults: 2 x 650
    assert sum(p.numel() for p in model.parameters()) == 19_780_400  # 6.5M embedding + 2 x 3.385M LSTM + 6.51M decoder


def test_tying_shares_one_matrix_and_init_is_uniform_in_a_tenth():
    torch.manual_seed(0)
    model = build_language_model("lstm", vocab_size=500, emsize=32, nhid=32, layers=1, tied=True)
    assert model.decoder.weight is model.encoder.weight
    assert float(model.encoder.weight.abs().max()) <= 0.1 and float(model.encoder.weight.abs().max()) > 0.09
    assert torch.count_nonzero(model.decoder.bias) == 0


def test_forward_shapes_and_the_hidden_state_carried():
    model = build_language_model("lstm", vocab_size=30, emsize=8, nhid=12, layers=3, dropout=0.0)
    tokens = torch.randint(0, 30, (7, 4))
    hidden = model.initial_hidden(4)
    assert [tuple(h.shape) for h in hidden] == [(3, 4, 12)] * 2 and all(h.abs().sum() == 0 for h in hidden)
    logits, hidden = model(tokens, hidden)
    assert logits.shape == (7, 4, 30)
    # Two windows carried equal one window over their concatenation.
    first, h1 = model(tokens[:3], model.initial_hidden(4))
    second, _ = model(tokens[3:], h1)
    torch.testing.assert_close(torch.cat([first, second]), logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize("options, message", [
    ({"tied": True, "emsize": 100, "nhid": 200}, r"model.tied=true .* model.emsize \(100\) must equal model.nhid \(200\)"),
    ({"layers": 4}, r"model.layers=4 must be 1, 2 or 3"),
    ({"dropout": 1.0}, r"model.dropout=1.0 must be in \[0, 1\)"),
    ({"nhid": 0}, r"model.nhid=0 must be a positive integer"),
    ({"hidden": 3}, r"does not take option\(s\) hidden"),
])
def test_bad_options_name_the_value(options, message):
    with pytest.raises(ValueError, match=message):
        build_language_model("lstm", vocab_size=10, **options)
    with pytest.raises(ValueError, match=r"Unknown model 'gru'"):
        build_language_model("gru", vocab_size=10)
