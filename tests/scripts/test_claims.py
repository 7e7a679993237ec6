"""experiments.reporting.claims: a definition's claims against hand-built table rows (means and stds by hand)."""

from __future__ import annotations

from experiments.reporting import claims


def row(optimizer: str, accuracies: list[float], **fixed) -> dict:
    runs = [{"summary": {"test_acc": a}} for a in accuracies]
    return {"group": ("cifar10", "resnet18", optimizer), "fixed": fixed, "best": {"finished": runs}}


CLAIM = {"text": "CM beats Adam", "metric": "test_acc", "better": {"optimizer": "adam_cm"}, "than": {"optimizer": "adam"}}


def test_a_claim_that_holds_and_one_that_does_not_say_so_with_the_numbers():
    rows = [row("adam", [0.80, 0.82]), row("adam_cm", [0.90, 0.92])]
    [note] = claims.verdicts(rows, [CLAIM, {**CLAIM, "text": "Adam beats CM", "better": {"optimizer": "adam"},
                                            "than": {"optimizer": "adam_cm"}}], mini=True)
    assert "- CM beats Adam: **holds**: 91.00 against 81.00 test_acc (%)." in note
    assert "- Adam beats CM: **does not hold**: 81.00 against 91.00 test_acc (%)." in note
    assert "toy-scale" in note


def test_a_difference_inside_the_seeds_spread_is_marked_and_lower_is_better_when_asked():
    rows = [row("adam", [0.80, 0.90]), row("adam_cm", [0.86, 0.86])]  # stds 0.0707 and 0: difference 0.01
    [note] = claims.verdicts(rows, [CLAIM, {**CLAIM, "text": "lower", "lower": True}], mini=False)
    assert "CM beats Adam: **holds**: 86.00 against 85.00 test_acc (%) (within the spread of the seeds)." in note
    assert "lower: **does not hold**" in note


def test_every_value_of_a_setting_must_hold_and_a_missing_side_is_not_measured():
    rows = [row("adam", [0.8], **{"trainer.batch_size": 64}), row("adam_cm", [0.9], **{"trainer.batch_size": 64}),
            row("adam", [0.8], **{"trainer.batch_size": 512}), row("adam_cm", [0.7], **{"trainer.batch_size": 512})]
    [note] = claims.verdicts(rows, [{**CLAIM, "every": "trainer.batch_size"}], mini=False)
    assert ("**does not hold** (1 of 2): trainer.batch_size=64: 90.00 against 80.00 test_acc (%); "
            "trainer.batch_size=512: 70.00 against 80.00 test_acc (%).") in note
    [missing] = claims.verdicts(rows[:1], [CLAIM], mini=False)
    assert "**not measured**" in missing
    assert claims.verdicts(rows, [], mini=False) == []
