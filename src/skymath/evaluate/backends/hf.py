"""transformers backend: batched greedy `generate` with left padding, CPU or GPU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from skymath.evaluate.backends.base import Generation, in_request_order, length_sorted_batches


class HFBackend:
    name = "hf"

    def __init__(self, model: str, batch_size: int = 8, dtype: str = "auto", device: str | None = None,
                 progress: Any = None, stop: Sequence[str] = ("### Instruction:",),
                 threads: int | None = None, **_: Any) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._threads_before = torch.get_num_threads()
        if threads and self.device == "cpu":
            # never more threads than the shard's CPUs: oversubscribed OpenMP threads spin and
            # run 2-4x slower than one thread on a busy node
            torch.set_num_threads(threads)
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype).to(self.device)
        self.model.eval()
        self.batch_size = max(1, batch_size)
        self.stop = tuple(stop)  # a sequence stops at any of these strings (the runner cuts them off)
        self.progress = progress

    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[Generation]:
        import torch

        tok = self.tokenizer
        lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        eos = tok.eos_token_id
        stop_kw = {"stopping_criteria": self._stop_criteria()} if self.stop else {}
        gens: list[Generation] = []
        for batch in length_sorted_batches(lengths, self.batch_size):
            enc = tok([prompts[i] for i in batch], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(self.device)
            with torch.inference_mode():
                out = self.model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                                          pad_token_id=tok.pad_token_id, eos_token_id=eos, **stop_kw)
            new = out[:, enc["input_ids"].shape[1]:]
            for row, i in enumerate(batch):
                ids = new[row].tolist()
                stop = ids.index(eos) if eos in ids else None
                n_tok = stop + 1 if stop is not None else len(ids)
                text = tok.decode(ids[:stop] if stop is not None else ids, skip_special_tokens=True)
                gens.append(Generation(index=i, text=text, prompt_tokens=lengths[i], completion_tokens=n_tok,
                                       finish_reason="stop" if stop is not None else "length"))
            if self.progress is not None:
                self.progress.update(len(batch))
        return in_request_order(gens, len(prompts))

    def _stop_criteria(self):
        """Built once: preparing stop strings scans the whole vocabulary (~0.5 s per call)."""
        if getattr(self, "_criteria", None) is None:
            from transformers import StoppingCriteriaList, StopStringCriteria

            self._criteria = StoppingCriteriaList([StopStringCriteria(self.tokenizer, list(self.stop))])
        return self._criteria

    def close(self) -> None:
        import torch

        self.model = None
        torch.set_num_threads(self._threads_before)  # the process is not only ours (in-process runs, tests)


def build(model: str, **options: Any) -> HFBackend:
    return HFBackend(model, **options)
