"""Two-stage SFT: tokenize + mask (data), padding-free packing (packing), Trainer + DeepSpeed (sft),
recipe presets (presets), srun/torchrun launch helpers (launch).

Only light modules (params, presets, launch) may be imported at config-load time; data, packing
and sft import torch/transformers/datasets inside their functions.
"""
