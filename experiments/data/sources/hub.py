"""Parquet copies of a dataset, as the Hugging Face Hub holds them: read from a folder, or fetched into it."""

from __future__ import annotations

from pathlib import Path

from experiments.data.images import DatasetNotFoundError


def parquet_available(folder: Path, download: bool) -> bool:
    """Whether read_parquet(folder, download, ...) has something to read: files there, or leave to fetch."""
    return download or any(folder.rglob("*.parquet"))


def read_parquet(folder: Path, download: bool, hub_name: str) -> dict:
    """{split: datasets.Dataset} from the parquet files under `folder` (split = file-name prefix before '-'),
    or, with none there and download=True, from the Hugging Face Hub into `folder`."""
    import datasets  # heavy; only these paths need it

    files = sorted(folder.rglob("*.parquet"))
    if files:
        splits: dict[str, list[str]] = {}
        for path in files:
            splits.setdefault(path.name.split("-")[0].split(".")[0], []).append(str(path))
        return {split: datasets.Dataset.from_parquet(paths, cache_dir=str(folder / ".cache"))
                for split, paths in splits.items()}
    try:
        return dict(datasets.load_dataset(hub_name, cache_dir=str(folder)))
    except Exception as error:  # the hub client raises many kinds (connection, not found, offline mode)
        raise DatasetNotFoundError(f"No parquet files under {folder}, and fetching {hub_name} from the "
                                   f"Hugging Face Hub failed ({type(error).__name__}: {error}). Without "
                                   f"network, copy its parquet files into {folder}.") from error
