"""Where the runners' configs live, and the values Hydra's files take from Python (one source for each).

configs/<runner>/ is a runner's config root: its primary config <runner>.yaml and its own groups (dataset or
benchmark, model, experiment, hparams_search), so a runner sees, lists in --help and accepts only those.
configs/common/ holds what every runner shares (optimizer, scheduler, trainer, logger, and hydra/ with the
one hydra block, hydra/default.yaml); each primary config adds it to Hydra's search path with
`hydra.searchpath: ["file://${cmopt_configs:common}"]`. Importing `experiments` registers the resolvers.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from experiments.options import FOLDER_NAME_EXCLUDES

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DIRECTIONS = {"max": "maximize", "min": "minimize"}  # select.mode -> an Optuna study's direction


def common_groups() -> str:
    """The groups of configs/common/ as --help lists them ("group: option, option", as Hydra lists a config
    root's own groups with $APP_CONFIG_GROUPS, which does not see the search path a primary config adds)."""
    common = CONFIGS / "common"
    folders = sorted(p for p in common.rglob("*") if p.is_dir() and any(p.glob("*.yaml")) and p.name != "hydra")
    return "\n".join(f"{folder.relative_to(common).as_posix()}: "
                     + ", ".join(sorted(f.stem for f in folder.glob("*.yaml"))) for folder in folders)


def register_resolvers() -> None:
    resolvers = {
        "cmopt_configs": lambda folder: str(CONFIGS / folder),  # an absolute path, wherever the command runs
        "cmopt_common_groups": common_groups,
        "cmopt_folder_name_excludes": lambda: list(FOLDER_NAME_EXCLUDES),
        "cmopt_direction": lambda mode: DIRECTIONS[mode],
    }
    for name, resolver in resolvers.items():
        OmegaConf.register_new_resolver(name, resolver, replace=True)
