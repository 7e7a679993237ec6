"""The paper's toy experiments: Goldstein-Price, Ackley, a flat/sharp 1-D function, and quadratic rates."""

OPTIMIZER_LABELS = {
    "adam": "Adam", "adam_cg": "Adam+CG", "adam_cm": "Adam+CM", "sam_adam": "Adam+SAM", "sam_adam_cm": "Adam+SAM+CM",
    "heavy_ball": "heavy ball", "sgd_cm": "SGD+CM", "adam_cm_debiased": "Adam+CM debiased (ours)",
}

# Names the toys accept beside the registry's: a registry optimizer with options fixed. The debiased
# Adam+CM (cmopt.AdamCM(variant="debiased"), ours and not the paper's) runs beside the paper's.
VARIANTS = {"adam_cm_debiased": ("adam_cm", {"variant": "debiased"})}


def optimizer_label(name: str) -> str:
    return OPTIMIZER_LABELS.get(name, name)
