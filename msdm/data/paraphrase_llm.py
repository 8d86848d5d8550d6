"""Paraphrases from any local or hub language model through transformers (``msdm paraphrase --model ID_OR_PATH``).

An instruction-tuned causal LM (anything ``AutoModelForCausalLM`` loads; a chat template is used when the tokenizer
has one) or a sequence-to-sequence paraphraser (``AutoModelForSeq2SeqLM``, e.g. a T5 paraphrase model) generates
``n × oversample`` sampled candidates per prompt; :func:`msdm.data.paraphrase.generate_paraphrases` then keeps those
that pass the fact checker. Sampling is seeded, so a run is reproducible for a fixed model, seed and device.

The paper (Prompt to Polyp §4.3) paraphrased the 483 MEDVQA-GI prompts into over 11 000 with a language model; the
instruction below asks for the same thing and spells out the facts the checker enforces.
"""

from __future__ import annotations

import re

INSTRUCTION = (
    "Paraphrase this prompt for a medical image generator. Keep every fact exactly: numbers, sizes, instruments, "
    "findings, colours, locations and any negation (no/not/without). Do not add anything. "
    "Answer with the paraphrase only, one sentence."
)


class LLMParaphraser:
    """``LLMParaphraser("path/or/hub-id").generate(prompts, n) -> list[list[str]]`` (unchecked candidates)."""

    name = "llm"

    def __init__(
        self,
        model: str,
        oversample: int = 2,
        max_new_tokens: int = 64,
        temperature: float = 0.9,
        top_p: float = 0.95,
        seed: int = 0,
        device: str | None = None,
        batch_size: int = 8,
        local_files_only: bool | None = None,
        trust_remote_code: bool = False,
    ):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        from msdm.hub import pretrained_source, resolve

        path, local_only = resolve(model, local_files_only)
        kw = dict(local_files_only=local_only, trust_remote_code=trust_remote_code)
        with pretrained_source(model, what="language model"):
            config = AutoConfig.from_pretrained(path, **kw)
            self.tokenizer = AutoTokenizer.from_pretrained(path, **kw)
            cls = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
            self.model = cls.from_pretrained(path, **kw)
        self.seq2seq = bool(getattr(config, "is_encoder_decoder", False))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.tokenizer.padding_side = "left"  # decoder-only generation continues on the right
        self.model_name = model
        self.oversample, self.max_new_tokens = max(1, int(oversample)), int(max_new_tokens)
        self.temperature, self.top_p, self.seed, self.batch_size = float(temperature), float(top_p), int(seed), int(batch_size)

    def _input_text(self, prompt: str) -> str:
        if self.seq2seq:
            return f"paraphrase: {prompt}"
        if getattr(self.tokenizer, "chat_template", None):
            msgs = [{"role": "user", "content": f"{INSTRUCTION}\n\nPrompt: {prompt}"}]
            return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return f"{INSTRUCTION}\nPrompt: {prompt}\nParaphrase:"

    @staticmethod
    def clean(text: str) -> str:
        """First line of a generation, without quotes or a "Paraphrase:" label."""
        text = text.strip().split("\n")[0].strip()
        text = re.sub(r"^(?:paraphrase|answer|output)\s*:\s*", "", text, flags=re.IGNORECASE)
        return text.strip().strip('"').strip("'").strip()

    def generate(self, prompts: list[str], n: int = 5) -> list[list[str]]:
        import torch

        k = max(1, n * self.oversample)
        out: list[list[str]] = []
        torch.manual_seed(self.seed)  # reproducible sampling for a fixed model/seed/device
        for start in range(0, len(prompts), self.batch_size):
            batch = prompts[start : start + self.batch_size]
            enc = self.tokenizer([self._input_text(p) for p in batch], return_tensors="pt", padding=True)
            enc = {key: v.to(self.device) for key, v in enc.items()}
            with torch.no_grad():
                gen = self.model.generate(
                    **enc,
                    do_sample=True,
                    temperature=self.temperature,
                    top_p=self.top_p,
                    num_return_sequences=k,
                    max_new_tokens=self.max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            if not self.seq2seq:
                gen = gen[:, enc["input_ids"].shape[1] :]  # keep only the continuation
            texts = self.tokenizer.batch_decode(gen, skip_special_tokens=True)
            for i in range(len(batch)):
                out.append([self.clean(t) for t in texts[i * k : (i + 1) * k]])
        return out
