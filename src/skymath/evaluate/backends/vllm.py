"""vLLM offline backend (needs a GPU and `pip install skymath[vllm]`; never runs on CPU here).

`LLM(model, tensor_parallel_size, dtype, seed)` + `SamplingParams(temperature=0, max_tokens=N)`;
`llm.generate(prompts, params)` schedules the whole list itself (continuous batching), and the
outputs are put back in request order by their request id before anything is returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from skymath.errors import UserError
from skymath.evaluate.backends.base import Generation, in_request_order


def to_generations(outputs: Sequence[Any], prompts: Sequence[str] | None = None) -> list[Generation]:
    """vLLM RequestOutputs -> Generations in request order.

    `LLM.generate` numbers requests with a counter that keeps growing across calls, so the
    position of a request in this call is its rank among this call's request ids. With `prompts`,
    each output's echoed prompt must match its request (a mislabelled answer is worse than none).
    """
    ranked = sorted(outputs, key=lambda o: int(str(o.request_id).split("-")[0]))
    if prompts is not None and len(prompts) != len(ranked):
        raise RuntimeError(f"vLLM returned {len(ranked)} outputs for {len(prompts)} prompts")
    gens = []
    for pos, o in enumerate(ranked):
        if prompts is not None and o.prompt is not None and o.prompt != prompts[pos]:
            raise RuntimeError(f"vLLM output {o.request_id} does not belong to request {pos}")
        c = o.outputs[0]
        gens.append(Generation(index=pos, text=c.text, prompt_tokens=len(o.prompt_token_ids or []),
                               completion_tokens=len(c.token_ids or []), finish_reason=c.finish_reason))
    return in_request_order(gens, len(outputs))


class VLLMBackend:
    name = "vllm"

    def __init__(self, model: str, tensor_parallel_size: int = 1, dtype: str = "auto", seed: int = 0,
                 max_model_len: int | None = None, gpu_memory_utilization: float = 0.9,
                 stop: Sequence[str] = ("### Instruction:",), **_: Any) -> None:
        self.stop = tuple(stop)
        try:
            from vllm import LLM
        except ImportError:
            raise UserError("backend vllm needs a GPU node with vLLM installed (pip install 'skymath[vllm]'); "
                            "use backend: hf on CPU") from None
        kw: dict[str, Any] = {"model": model, "tensor_parallel_size": tensor_parallel_size, "dtype": dtype,
                              "seed": seed, "gpu_memory_utilization": gpu_memory_utilization}
        if max_model_len:
            kw["max_model_len"] = max_model_len
        self.llm = LLM(**kw)
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[Generation]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0, max_tokens=max_new_tokens, stop=list(self.stop))
        outputs = self.llm.generate(list(prompts), params, use_tqdm=True)
        return to_generations(outputs, prompts)

    def close(self) -> None:
        self.llm = None


def build(model: str, **options: Any) -> VLLMBackend:
    return VLLMBackend(model, **options)
