"""Subword corpora: WikiText-103 and folders of text (openwebtext-style), tokenized once into flat token files.

    corpus = build_text_corpus("wikitext103", root="data/wikitext103")             # byte-level BPE, 16,384 tokens
    corpus = build_text_corpus("text_folder", root="my_texts", tokenizer="gpt2")   # GPT-2's tokenizer (online)

Tokenizers: `gpt2` is GPT-2's byte-level BPE (50,257 tokens) from the Hugging Face Hub through the
`tokenizers` package, which needs the network once (then cached by huggingface_hub); `bpe` is a byte-level
BPE of `vocab_size` tokens trained with `tokenizers` on the training split, saved beside the data
(<root>/tokenized/bpe<vocab_size>/tokenizer.json) and reused. Every line is encoded with its newline.

Each split is tokenized once into <root>/tokenized/<tokenizer>/<split>.bin, a flat array of uint16 token ids
(uint32 above 65,536 tokens) as nanoGPT's .bin files, with meta.json; every process memory-maps it and
reads its windows from it. The files are rebuilt when the text files they came from change (names and sizes).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from experiments.data.images import DatasetNotFoundError
from experiments.options import UserError

SPLITS = ("train", "valid", "test")
TOKENIZERS = ("bpe", "gpt2")
BYTE_ALPHABET = 256  # a byte-level BPE starts from one token per byte
ENCODE_CHUNK = 10_000  # lines per encode_batch call


def subword_corpus(source: str, root: Path, tokenizer: str, vocab_size: int | None, bptt: int,
                   read_lines: Callable[[], dict[str, list[str]]], fingerprint: dict) -> "TextCorpus":
    """The corpus of `read_lines()` (each split's lines, newlines included) in `tokenizer`'s tokens, from
    the token files under `root` when they were made from the same text (`fingerprint`), else made now."""
    from experiments.data.text import TextCorpus, TokenStream

    tag = check_tokenizer(tokenizer, vocab_size)
    folder = root / "tokenized" / tag
    meta = _read_meta(folder)
    if meta is None or meta["fingerprint"] != fingerprint:
        lines = read_lines()
        encoder = _tokenizer(tokenizer, vocab_size, folder, lines["train"], fingerprint, source)
        meta = _write_token_files(encoder, lines, folder, fingerprint, tokenizer)
    dtype = np.dtype(meta["dtype"])
    streams = {}
    for split in SPLITS:
        count = meta["tokens"][split]
        ids = np.memmap(folder / f"{split}.bin", dtype=dtype, mode="c", shape=(count,)) if count else np.zeros(0, dtype)
        # mode "c": a private (copy-on-write) mapping, so torch shares it without a copy or a read-only warning.
        streams[split] = TokenStream(torch.from_numpy(ids), bptt, split)
    return TextCorpus(*(streams[s] for s in SPLITS), vocabulary=tuple(meta["vocabulary"]),
                      token_bytes=torch.tensor(meta["token_bytes"], dtype=torch.float64), tokenizer=tag)


def has_token_files(root: Path, tokenizer: str, vocab_size: int | None, fingerprint: dict) -> bool:
    """Whether `root` holds complete token files made from `fingerprint`'s text (no need to read it again)."""
    meta = _read_meta(root / "tokenized" / check_tokenizer(tokenizer, vocab_size))
    return meta is not None and meta["fingerprint"] == fingerprint


def check_tokenizer(tokenizer: str, vocab_size: int | None) -> str:
    """The token files' folder name for (tokenizer, vocab_size), or a UserError naming what to set."""
    if tokenizer not in TOKENIZERS:
        raise UserError(f"dataset.tokenizer={tokenizer!r} is not a tokenizer here; use bpe (trained on the "
                         f"training split, offline) or gpt2 (GPT-2's, fetched from the Hugging Face Hub).")
    if tokenizer == "gpt2":
        if vocab_size not in (None, 50257):
            raise UserError(f"dataset.vocab_size={vocab_size} cannot be set with dataset.tokenizer=gpt2, whose "
                             f"vocabulary is 50,257 tokens; set dataset.vocab_size=null, or tokenizer=bpe.")
        return "gpt2"
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size <= BYTE_ALPHABET:
        raise UserError(f"dataset.vocab_size={vocab_size!r} must be an integer above {BYTE_ALPHABET} for "
                         f"dataset.tokenizer=bpe: a byte-level BPE starts from the {BYTE_ALPHABET} bytes and "
                         f"adds merges; e.g. dataset.vocab_size=16384.")
    return f"bpe{vocab_size}"


def _tokenizer(name: str, vocab_size: int | None, folder: Path, train_lines: list[str], fingerprint: dict,
               source: str):
    from tokenizers import Tokenizer

    if name == "gpt2":
        try:
            return Tokenizer.from_pretrained("gpt2")
        except Exception as error:  # no network, or the Hub refused
            raise DatasetNotFoundError(
                f"dataset.tokenizer=gpt2: could not fetch GPT-2's tokenizer from the Hugging Face Hub ({error}). "
                f"Without network, use dataset.tokenizer=bpe (trained on the training split here).") from error
    saved = folder / "tokenizer.json"
    meta = _read_meta(folder, "tokenizer_meta.json")
    if saved.is_file() and meta is not None and meta["fingerprint"] == fingerprint:
        return Tokenizer.from_file(str(saved))
    tokenizer = train_bpe(train_lines, vocab_size, source)
    folder.mkdir(parents=True, exist_ok=True)
    _atomic(saved, lambda path: tokenizer.save(str(path)))
    _atomic(folder / "tokenizer_meta.json", lambda path: path.write_text(json.dumps({"fingerprint": fingerprint})))
    return tokenizer


def train_bpe(lines: Iterable[str], vocab_size: int, source: str):
    """A byte-level BPE (GPT-2's pre-tokenization) of exactly `vocab_size` tokens trained on `lines`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(lines, trainer)
    reached = tokenizer.get_vocab_size()
    if reached < vocab_size:
        raise UserError(f"dataset.vocab_size={vocab_size} cannot be reached: the byte-level BPE trained on the "
                         f"training split of {source} stops at {reached} tokens (no pair of tokens left to merge). "
                         f"Use dataset.vocab_size={reached} or less, or more training text.")
    return tokenizer


def _write_token_files(tokenizer, lines: dict[str, list[str]], folder: Path, fingerprint: dict, name: str) -> dict:
    vocab_size = tokenizer.get_vocab_size()
    dtype = np.uint16 if vocab_size <= 1 << 16 else np.uint32
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in SPLITS:
        def write(path: Path, split=split) -> None:
            with open(path, "wb") as file:
                counts[split] = 0
                for ids in _encode(tokenizer, lines[split]):
                    array = np.asarray(ids, dtype=dtype)
                    array.tofile(file)
                    counts[split] += len(array)
        _atomic(folder / f"{split}.bin", write)
    vocabulary = [""] * vocab_size
    for token, index in tokenizer.get_vocab(with_added_tokens=True).items():
        vocabulary[index] = token
    special = set(tokenizer.get_added_tokens_decoder())
    # A byte-level token's characters are bytes, one each; a special token (<|endoftext|>) stands for none.
    token_bytes = [0 if i in special else len(t) for i, t in enumerate(vocabulary)]
    meta = {"tokenizer": name, "vocab_size": vocab_size, "dtype": np.dtype(dtype).name, "tokens": counts,
            "vocabulary": vocabulary, "token_bytes": token_bytes, "fingerprint": fingerprint}
    _atomic(folder / "meta.json", lambda path: path.write_text(json.dumps(meta)))  # last: the files are complete
    return meta


def _encode(tokenizer, lines: list[str]) -> Iterator[list[int]]:
    for start in range(0, len(lines), ENCODE_CHUNK):
        for encoding in tokenizer.encode_batch(lines[start: start + ENCODE_CHUNK], add_special_tokens=False):
            yield encoding.ids


def _read_meta(folder: Path, name: str = "meta.json") -> dict | None:
    path = folder / name
    return json.loads(path.read_text()) if path.is_file() else None


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)`, then rename onto `path`: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def files_fingerprint(paths: Iterable[Path], root: Path) -> dict:
    """What the token files were made from: each text file's path under `root` and size."""
    return {"files": [[str(p.relative_to(root)), p.stat().st_size] for p in paths]}
