"""The report judges each claim from the numbers: hand-made results where it holds, and where it does NOT."""

import math

import numpy as np
import pytest

from experiments.toy.report import (evaluate_claims, grows, rank_correlation, render_report,
                                    verdict_over_learning_rates)

OPTIMIZERS = ["adam", "adam_cg", "adam_cm"]


def search_result(reached: dict[float, dict[str, int]], runs=49):
    """A Goldstein-Price/Ackley result with only what the report reads."""
    return {
        "settings": {"optimizers": OPTIMIZERS},
        "lowest_local_minimum": {"loss": 30.0},
        "summary": [dict(optimizer=o, lr=lr, runs=runs, reached_global_minimum=n, median_final_loss=1.0)
                    for lr, by_optimizer in reached.items() for o, n in by_optimizer.items()],
    }


def escape_result(by_lr: dict[float, dict[str, list[float]]], sharpness=(1, 4, 16)):
    """A flat/sharp result: escape ratios by sharpness; the overall ratio is their mean (equal cells)."""
    return {
        "settings": {"optimizers": OPTIMIZERS, "sharpness": list(sharpness)},
        "summary": [dict(optimizer=o, lr=lr, runs=30, escaped=round(30 * sum(r) / len(r)),
                         escape_ratio=sum(r) / len(r), escape_ratio_by_sharpness=r)
                    for lr, by_optimizer in by_lr.items() for o, r in by_optimizer.items()],
    }


def quadratic_result(sgd_cm_rates, heavy_ball_rates):
    def found(rates):
        return [dict(rate=r, lr=1.0, momentum=0.5) for r in rates]

    return {
        "settings": {"fixed_momentum": 0.9, "scaled_lr_sweep": [0.1], "capacity": 5},
        "condition_numbers": [10.0, 100.0],
        "heavy_ball_closed_form": [0.52, 0.82],
        "optimal": {"heavy_ball": found(heavy_ball_rates), "sgd_cm": found(sgd_cm_rates)},
        "fixed_momentum": {"heavy_ball": found(heavy_ball_rates), "sgd_cm": found(sgd_cm_rates)},
        "lr_sweep": {"heavy_ball": [heavy_ball_rates], "sgd_cm": [sgd_cm_rates]},
    }


def test_global_minimum_claim_judged_at_each_learning_rate():
    results = {
        # CM ahead at lr 0.01; at lr 0.1 Adam reaches more: the ordering depends on the learning rate
        "goldstein_price": search_result({0.01: dict(adam=3, adam_cg=4, adam_cm=9),
                                          0.1: dict(adam=6, adam_cg=2, adam_cm=5)}),
        # CM ahead at both
        "ackley": search_result({0.01: dict(adam=1, adam_cg=1, adam_cm=2), 0.1: dict(adam=0, adam_cg=3, adam_cm=4)}),
    }
    gp, ackley = evaluate_claims(results)[:2]
    assert gp.verdict == "holds only at lr 0.01; does NOT hold at lr 0.1"
    assert any("lr 0.1: Adam+CM 5/49, Adam 6/49, Adam+CG 2/49" in e and "does NOT hold" in e for e in gp.evidence)
    assert ackley.verdict == "HOLDS at every learning rate tried"


def test_a_tie_is_not_more_starting_points():
    result = search_result({0.03: dict(adam=4, adam_cg=2, adam_cm=4)})
    assert evaluate_claims({"ackley": result})[1].verdict == "does NOT hold at any learning rate tried"


def test_escape_ordering_needs_cm_above_cg_above_adam():
    result = escape_result({
        0.01: dict(adam=[0.0, 0.1, 0.2], adam_cg=[0.1, 0.2, 0.3], adam_cm=[0.3, 0.5, 0.7]),  # CM > CG > Adam
        0.1: dict(adam=[0.2, 0.3, 0.4], adam_cg=[0.1, 0.2, 0.3], adam_cm=[0.3, 0.5, 0.7]),   # CG below Adam
    })
    order = evaluate_claims({"flat_sharp": result})[2]
    assert order.verdict == "holds only at lr 0.01; does NOT hold at lr 0.1"


def test_escape_growth_fails_when_any_optimizer_does_not_grow():
    growing = escape_result({0.03: dict(adam=[0.0, 0.1, 0.2], adam_cg=[0.1, 0.1, 0.3], adam_cm=[0.3, 0.5, 0.7])})
    assert evaluate_claims({"flat_sharp": growing})[3].verdict == "HOLDS at every learning rate tried"
    flat = escape_result({0.03: dict(adam=[0.0, 0.0, 0.0], adam_cg=[0.1, 0.1, 0.3], adam_cm=[0.3, 0.5, 0.7])})
    claim = evaluate_claims({"flat_sharp": flat})[3]
    assert claim.verdict == "does NOT hold at any learning rate tried"
    assert any(e.startswith("lr 0.03, Adam:") and "does NOT grow" in e for e in claim.evidence)


def test_quadratic_claim_fails_when_a_rate_reaches_one():
    assert evaluate_claims({"quadratic": quadratic_result([0.9, 0.99], [0.5, 0.8])})[4].verdict.startswith("HOLDS")
    failing = evaluate_claims({"quadratic": quadratic_result([0.9, 1.02], [0.5, 0.8])})[4]
    assert failing.verdict == "does NOT hold"
    assert any("NOT below 1 everywhere" in e for e in failing.evidence)


def test_missing_experiments_and_optimizers_are_reported_as_not_tested():
    claims = evaluate_claims({"ackley": {**search_result({0.1: dict(adam=1, adam_cm=2)}),
                                         "settings": {"optimizers": ["adam", "adam_cm"]}}})
    assert claims[0].verdict == "not tested: the experiment has not been run"
    assert claims[1].verdict == "not tested: adam_cg not among the optimizers run"


def test_rendered_report_carries_verdicts_tables_and_figures():
    results = {"goldstein_price": search_result({0.01: dict(adam=3, adam_cg=4, adam_cm=2)})}
    text = render_report(results)
    assert "**does NOT hold at any learning rate tried.**" in text
    assert "| Adam+CM | 2/49 (median loss 1) |" in text
    assert "![figure1_goldstein_price.png](figure1_goldstein_price.png)" in text


def test_verdicts_and_rank_correlation():
    assert verdict_over_learning_rates({0.1: True, 0.3: True}) == "HOLDS at every learning rate tried"
    assert verdict_over_learning_rates({0.1: False}) == "does NOT hold at any learning rate tried"
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties share their mean rank: ranks (0.5, 0.5, 2, 3) against (0, 1, 2, 3)
    expected = float(np.corrcoef([0, 1, 2, 3], [0.5, 0.5, 2, 3])[0, 1])
    assert rank_correlation([1, 2, 3, 4], [0, 0, 1, 2]) == pytest.approx(expected)
    assert math.isnan(rank_correlation([1, 2, 3], [0.5, 0.5, 0.5]))
    assert grows([1, 2, 4], [0.0, 0.2, 0.1]) and not grows([1, 2, 4], [0.3, 0.2, 0.3])


def test_the_debiased_variant_gets_its_own_row_for_each_comparison_claim():
    search = {0.01: dict(adam=3, adam_cg=4, adam_cm=9, adam_cm_debiased=2),
              0.1: dict(adam=6, adam_cg=2, adam_cm=5, adam_cm_debiased=7)}
    result = search_result(search)
    result["settings"]["optimizers"] = [*OPTIMIZERS, "adam_cm_debiased"]
    escape = escape_result({0.01: dict(adam=[0.0, 0.1], adam_cg=[0.1, 0.2], adam_cm=[0.3, 0.5],
                                       adam_cm_debiased=[0.2, 0.4])}, sharpness=(1, 2))
    escape["settings"]["optimizers"] = [*OPTIMIZERS, "adam_cm_debiased"]
    claims = evaluate_claims({"goldstein_price": result, "flat_sharp": escape})
    assert claims[0].verdict == "holds only at lr 0.01; does NOT hold at lr 0.1"  # the paper's Adam+CM, unchanged
    gp, ackley, order = claims[5:8]
    assert gp.statement.startswith("Adam+CM debiased (ours) reaches the global minimum of Goldstein-Price")
    assert gp.verdict == "holds only at lr 0.1; does NOT hold at lr 0.01"
    assert "lr 0.1: Adam+CM debiased (ours) 7/49, Adam 6/49, Adam+CG 2/49 runs reach it -> holds" in gp.evidence
    assert ackley.verdict == "not tested: the experiment has not been run"
    assert order.verdict == "HOLDS at every learning rate tried"  # 0.3 > 0.15 > 0.05
    without = evaluate_claims({"goldstein_price": search_result({0.01: dict(adam=3, adam_cg=4, adam_cm=9)})})
    assert without[5].verdict == "not tested: adam_cm_debiased not among the optimizers run"
