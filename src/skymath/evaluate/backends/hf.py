"""transformers backend: batched greedy `generate` with left padding, CPU or GPU.

Prompt tokens are made exactly as SFT makes them (`add_special_tokens`: the tokenizer's BOS for the
alpaca frame, as `skymath.train.data` does), and `max_length` is the TOTAL budget, prompt + answer,
per prompt (the paper's 2048). A batch whose `generate` raises (CUDA OOM, a broken kernel) fails
its prompts with the error; they are never graded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from skymath.evaluate.backends.base import Generation, in_request_order, length_sorted_batches


class HFBackend:
    name = "hf"

    def __init__(self, model: str, batch_size: int = 8, dtype: str = "auto", device: str | None = None,
                 progress: Any = None, stop: Sequence[str] = ("### Instruction:",),
                 threads: int | None = None, max_length: int | None = None, add_special_tokens: bool = True,
                 **_: Any) -> None:
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
        self.max_length = max_length
        self.add_special_tokens = add_special_tokens

    def encode_prompts(self, prompts: Sequence[str]) -> list[list[int]]:
        """The token ids each prompt is generated from (identical to SFT's prompt ids)."""
        return self.tokenizer(list(prompts), add_special_tokens=self.add_special_tokens)["input_ids"]

    def budget(self, prompt_tokens: int, max_new_tokens: int) -> int:
        """New tokens this prompt may get: the cap, and the total length budget minus the prompt."""
        if self.max_length is None:
            return max_new_tokens
        return max(0, min(max_new_tokens, self.max_length - prompt_tokens))

    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[Generation]:
        import torch

        tok = self.tokenizer
        ids_all = self.encode_prompts(prompts)
        lengths = [len(x) for x in ids_all]
        budgets = [self.budget(n, max_new_tokens) for n in lengths]
        eos = tok.eos_token_id
        stop_kw = {"stopping_criteria": self._stop_criteria()} if self.stop else {}
        gens: list[Generation] = []
        for batch in length_sorted_batches(lengths, self.batch_size):
            for i in [i for i in batch if budgets[i] == 0]:  # the prompt alone fills the budget
                gens.append(Generation(index=i, text="", prompt_tokens=lengths[i], finish_reason="length"))
            rows = [i for i in batch if budgets[i] > 0]
            try:
                if rows:
                    gens.extend(self._generate_batch(rows, ids_all, lengths, budgets, eos, stop_kw))
            except Exception as e:  # noqa: BLE001 - the batch fails (an error, never a graded answer)
                if "out of memory" in str(e).lower() and self.device.startswith("cuda"):
                    torch.cuda.empty_cache()
                err = f"{type(e).__name__}: {e}"
                gens.extend(Generation(index=i, text="", prompt_tokens=lengths[i], error=err) for i in rows)
            if self.progress is not None:
                self.progress.update(len(batch))
        return in_request_order(gens, len(prompts))

    def _generate_batch(self, rows: list[int], ids_all: list[list[int]], lengths: list[int], budgets: list[int],
                        eos: int | None, stop_kw: dict) -> list[Generation]:
        """One left-padded batch; generated up to its largest budget, each row cut to its own (greedy
        rows are independent, so the cut equals generating that row alone with its budget)."""
        import torch

        tok = self.tokenizer
        enc = tok.pad({"input_ids": [ids_all[i] for i in rows]}, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**enc, do_sample=False, max_new_tokens=max(budgets[i] for i in rows),
                                      pad_token_id=tok.pad_token_id, eos_token_id=eos, **stop_kw)
        new = out[:, enc["input_ids"].shape[1]:]
        gens = []
        for row, i in enumerate(rows):
            ids = new[row].tolist()[: budgets[i]]
            stop = ids.index(eos) if eos in ids else None
            n_tok = stop + 1 if stop is not None else len(ids)
            if stop is not None and tok.pad_token_id == eos and self._ends_on_stop_string(ids[:stop]):
                n_tok = stop  # the row stopped on a stop string: that "eos" is padding, not generated
            if stop is None and tok.pad_token_id is not None and tok.pad_token_id != eos:
                while n_tok and ids[n_tok - 1] == tok.pad_token_id:  # padding after a stop string
                    n_tok -= 1
            text = tok.decode(ids[:stop] if stop is not None else ids[:n_tok], skip_special_tokens=True)
            finish = "stop" if stop is not None or n_tok < budgets[i] else "length"
            gens.append(Generation(index=i, text=text, prompt_tokens=lengths[i], completion_tokens=n_tok,
                                   finish_reason=finish))
        return gens

    def _ends_on_stop_string(self, ids: list[int]) -> bool:
        tail = self.tokenizer.decode(ids[-16:], skip_special_tokens=True)
        return any(s in tail[-(len(s) + 8):] for s in self.stop)

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
