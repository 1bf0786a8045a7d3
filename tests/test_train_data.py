"""SFT data and batching: prompt masking, truncation, the memory-mapped tokenized parts and their
validation slice, packing == unpacked loss, and the config checks at load time."""

from __future__ import annotations

import pytest
from support.train_common import data_stage, math_records, one_thread

from skymath.config import config_from_dict
from skymath.errors import UserError
from skymath.prompts import sft_prompt, sft_target
from skymath.train.data import DROPPED, OK, TRUNCATED, DataSettings, encode
from skymath.train.params import plan_batch


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    import torch

    old = one_thread()
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tok(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def test_labels_masked_exactly_on_prompt(tok):
    rec = math_records(1)[0]
    ids, labels, status = encode(tok, rec.problem, rec.response, DataSettings(max_length=2048))
    assert status == OK
    n_prompt = len(tok(sft_prompt(rec.problem))["input_ids"])
    assert labels[:n_prompt] == [-100] * n_prompt
    assert all(x != -100 for x in labels[n_prompt:])
    assert labels[n_prompt:] == ids[n_prompt:]
    assert ids[-1] == tok.eos_token_id  # the model learns to stop (pad == eos here: masked by position)
    trained = tok.decode(ids[n_prompt:-1])
    assert trained == sft_target(rec.response)
    assert trained.endswith(f"\nThe answer is {rec.answer}")
    assert tok.decode(ids[:n_prompt]).endswith("Let's think step by step.")


def _triples(recs):
    return [(r.id, r.problem, r.response) for r in recs]


def test_tokenized_part_holds_exactly_encode_and_counts_truncate_and_drop(tok, tmp_path):
    from skymath.train.tokenized import TokenizedSplit, read_meta, write_part

    recs = math_records(12, max_chars=2000)
    lens = [len(encode(tok, r.problem, r.response, DataSettings(4096))[0]) for r in recs]
    limit = sorted(lens)[len(lens) // 2]  # about half the samples are longer
    longer = sum(n > limit for n in lens)
    assert 0 < longer < len(recs)
    ids, labels, st = encode(tok, recs[lens.index(max(lens))].problem, recs[lens.index(max(lens))].response,
                             DataSettings(limit, "truncate"))
    assert st == TRUNCATED and len(ids) == limit == len(labels) and labels[-1] != -100
    assert encode(tok, recs[0].problem, "x" * 50000, DataSettings(limit, "drop"))[2] == DROPPED
    for policy in ("truncate", "drop"):
        s = DataSettings(limit, policy)
        part = tmp_path / policy
        meta = write_part(_triples(recs), tok, s, part)
        ds = TokenizedSplit([part], "train")
        if policy == "truncate":
            assert (meta["truncated"], meta["dropped"], len(ds)) == (longer, 0, len(recs))
        else:
            assert (meta["truncated"], meta["dropped"], len(ds)) == (0, longer, len(recs) - longer)
        kept = [r for r, n in zip(recs, lens, strict=True) if policy == "truncate" or n <= limit]
        for i, r in enumerate(kept):  # memory-mapped ids and labels are exactly encode()'s
            want_ids, want_labels, _ = encode(tok, r.problem, r.response, s)
            assert ds[i]["input_ids"].tolist() == want_ids and ds[i]["labels"].tolist() == want_labels
        assert max(ds.lengths) <= limit and meta["train_tokens"] == sum(ds.lengths) == ds.tokens
        assert read_meta(part) == meta and not list(tmp_path.glob("*.partial"))


def test_validation_slice_is_deterministic_and_independent_of_sharding(tok, tmp_path):
    import pickle

    from skymath.train.tokenized import Fingerprints, TokenizedSplit, check_parts, is_val, write_part

    recs = math_records(40)
    s = DataSettings(256)
    write_part(_triples(recs), tok, s, tmp_path / "one", val_fraction=0.25, seed=3)
    write_part(_triples(recs[:13]), tok, s, tmp_path / "a", val_fraction=0.25, seed=3)
    write_part(_triples(recs[13:]), tok, s, tmp_path / "b", val_fraction=0.25, seed=3)
    val_ids = [r.id for r in recs if is_val(r.id, 0.25, 3)]
    assert 0 < len(val_ids) < len(recs) and val_ids != [r.id for r in recs if is_val(r.id, 0.25, 4)]
    for split in ("train", "val"):
        one = TokenizedSplit([tmp_path / "one"], split)
        two = pickle.loads(pickle.dumps(TokenizedSplit([tmp_path / "a", tmp_path / "b"], split)))  # as a worker gets it
        assert len(one) == len(two) == (len(val_ids) if split == "val" else len(recs) - len(val_ids))
        assert all(one[i]["input_ids"].tolist() == two[i]["input_ids"].tolist() for i in range(len(one)))
    assert len(TokenizedSplit([tmp_path / "a", tmp_path / "b"], "train", limit=5)) == 5
    check_parts([tmp_path / "a"], Fingerprints.of(tok, s), "x")
    with pytest.raises(UserError, match=r"tokenized with max_length=256 but this stage needs 512"):
        check_parts([tmp_path / "a"], Fingerprints.of(tok, DataSettings(512)), "x")


def _features(tok, n=4):
    recs = math_records(n, max_chars=300)
    out = []
    for r in recs:
        ids, labels, _ = encode(tok, r.problem, r.response, DataSettings(512))
        out.append({"input_ids": ids, "labels": labels})
    return out


def test_packed_loss_equals_unpacked_loss(tok, tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    from skymath.train.packing import PackedCollator, PaddedCollator

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation="sdpa")
    model.eval()
    model.config.use_cache = False  # as in training: a KV cache disables packed-sequence masking
    feats = _features(tok)
    assert len({len(f["input_ids"]) for f in feats}) > 1
    packed = PackedCollator()(feats)
    assert packed["input_ids"].shape == (1, sum(len(f["input_ids"]) for f in feats))  # no padding at all
    starts = (packed["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert len(starts) == len(feats)  # position ids restart per example
    with torch.no_grad():
        # reference: each example alone, token-level mean over the whole batch
        total, count = 0.0, 0
        for f in feats:
            ids = torch.tensor([f["input_ids"]])
            lab = torch.tensor([f["labels"]])
            n = int((lab[:, 1:] != -100).sum())
            total += float(model(input_ids=ids, labels=lab).loss) * n
            count += n
        unpacked = total / count
        packed_loss = float(model(**packed).loss)
        padded_loss = float(model(**PaddedCollator(tok.pad_token_id)(feats)).loss)
        # without restarting positions (plain concatenation) the loss differs: the check has teeth
        naive = {k: v for k, v in packed.items() if k != "position_ids"}
        naive_loss = float(model(**naive).loss)
    assert abs(packed_loss - unpacked) < 1e-4
    # the per-example SDPA used for packed rows without flash-attn gives the same loss
    from skymath.train.packing import register_varlen_attention

    model.set_attn_implementation(register_varlen_attention())
    with torch.no_grad():
        varlen_loss = float(model(**PackedCollator(flash_attn_kwargs=True)(feats)).loss)
    assert abs(varlen_loss - unpacked) < 1e-4
    assert abs(padded_loss - unpacked) < 1e-4
    assert abs(naive_loss - unpacked) > 1e-3


def test_plan_batch_arithmetic():
    assert plan_batch(32, 8, 4, None) == (4, 1)
    assert plan_batch(32, 1, None, None) == (4, 8)
    assert plan_batch(32, 2, None, 4) == (4, 4)
    with pytest.raises(ValueError, match=r"32 != 16 processes x micro_batch_size 4 x grad_accum 2 = 128"):
        plan_batch(32, 16, 4, 2)


def _sft_cfg(params: dict, resources: dict | None = None, extra: dict | None = None) -> dict:
    stages = {"data": data_stage(), "tok": {"kind": "tokenize", "depends_on": ["data"]},
              "sft-1": {"kind": "sft", "depends_on": ["tok"], "params": params, "resources": resources or {}}}
    stages.update(extra or {})
    return {"stages": stages}


def test_misconfigured_global_batch_fails_at_load_naming_the_numbers():
    bad = _sft_cfg({"global_batch_size": 32, "micro_batch_size": 4, "grad_accum": 2},
                   {"nodes": 2, "gpus": 8})
    with pytest.raises(UserError) as e:
        config_from_dict(bad, "cfg.yaml")
    msg = str(e.value)
    assert msg.startswith("cfg.yaml: stages.sft-1.params:")
    assert "32" in msg and "16 processes" in msg and "micro_batch_size 4" in msg and "grad_accum 2" in msg
    assert "128" in msg and "2 node(s) x 8 GPU" in msg
    ok = config_from_dict(_sft_cfg({"global_batch_size": 32, "micro_batch_size": 4}, {"nodes": 1, "gpus": 8}))
    assert ok.stages["sft-1"].shape == "gpu-multinode"


def test_presets_and_stage_chaining_checks():
    cfg = config_from_dict(_sft_cfg({"preset": "mistral-7b", "lr": 1e-6}, {"gpus": 8}))
    p = cfg.stages["sft-1"].params
    assert (p.lr, p.epochs, p.global_batch_size, p.warmup_ratio, p.max_length, p.weight_decay) == (1e-6, 3, 32, 0.03, 2048, 0)
    assert p.model == "mistralai/Mistral-7B-v0.1"
    assert config_from_dict(_sft_cfg({"preset": "llama2-7b"}, {"gpus": 8})).stages["sft-1"].params.lr == 2e-5
    two = {"hard": data_stage(), "sft-2": {"kind": "sft", "depends_on": ["hard"], "params": {"model": "stage:sft-1"}}}
    with pytest.raises(UserError, match=r"stages.sft-2.depends_on: must include 'sft-1'"):
        config_from_dict(_sft_cfg({}, extra=two))
    two["sft-2"]["depends_on"] = ["sft-1", "hard"]
    cfg = config_from_dict(_sft_cfg({}, extra=two))
    from skymath.stages.sft import data_stage_names

    assert data_stage_names(cfg, "sft-2") == ["hard"]
    with pytest.raises(UserError, match="preset"):
        config_from_dict(_sft_cfg({"preset": "gpt-5"}))


def test_tokenize_stage_config_checks():
    from skymath.stages.tokenize import data_spec

    cfg = config_from_dict(_sft_cfg({"preset": "mistral-7b", "max_length": 1024}, {"gpus": 8}))
    assert cfg.stages["tok"].shape == "cpu-array"
    assert data_spec(cfg, "sft-1")["tokenizer"] == "mistralai/Mistral-7B-v0.1" and data_spec(cfg, "sft-1")["max_length"] == 1024
    # stage 2's tokenizer is the root of its `stage:` chain (it tokenizes while stage 1 trains)
    two = {"hard": data_stage(), "tok2": {"kind": "tokenize", "depends_on": ["hard"]},
           "sft-2": {"kind": "sft", "depends_on": ["sft-1", "tok2"], "params": {"model": "stage:sft-1"}}}
    cfg = config_from_dict(_sft_cfg({"model": "tiny:smollm2"}, extra=two))
    assert data_spec(cfg, "sft-2")["tokenizer"] == "tiny:smollm2"
    bad = {
        "raw data, 8 processes": (_sft_cfg({"preset": "mistral-7b"}, {"gpus": 8}, {"sft-1": {
            "kind": "sft", "depends_on": ["data"], "params": {"preset": "mistral-7b"}, "resources": {"gpus": 8}}}),
            r"stages.sft-1.depends_on: 8 processes would wait while one tokenizes \['data'\]"),
        "no consumer": (_sft_cfg({}, extra={"tok9": {"kind": "tokenize", "depends_on": ["data"]}}),
                        r"stages.tok9: no sft stage depends on it"),
        "mixed": (_sft_cfg({}, extra={"sft-1": {"kind": "sft", "depends_on": ["tok", "data"]}}),
                  r"\['data'\] are record stages next to tokenize stage"),
        "disagree": (_sft_cfg({}, extra={"sft-b": {"kind": "sft", "depends_on": ["tok"], "params": {"max_length": 99}}}),
                     r"stages.tok: sft stages 'sft-1' and 'sft-b' need different tokenized data \(max_length"),
        "tokenize of tokenize": (_sft_cfg({}, extra={"tok2": {"kind": "tokenize", "depends_on": ["tok"]}}),
                                 r"stages.tok2.depends_on: 'tok' is a tokenize stage"),
    }
    for case, (raw, msg) in bad.items():
        with pytest.raises(UserError, match=msg):
            config_from_dict(raw, "cfg.yaml")
            pytest.fail(case)
