"""A user's own timm ViT as the ancestry (vit.ancestry_weights / vit.ancestry_timm): used as is or fine-tuned,
cached by the weights' sha256, its shape copied by the aux net and the descendants, and every refusal."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from learngene.config import load_config
from learngene.errors import ConfigError, ModelError
from learngene.models.io import load_network, save_network
from learngene.models.vit import vit_config
from learngene.vit.ancestry import save_ancestry
from learngene.vit.gene import TransformerGene
from learngene.vit.run import run_vit

# everything small: one seed, one epoch per stage, descendants of depth 2 and (deeper than the ancestry) 4
FAST = ["evaluate.methods=['heur-lg','tleg']", "vit.depths=[2,4]", "vit.widths=[]", "evaluate.seeds=[0]", "vit.aux_epochs=1",
        "vit.descendant_epochs=1", "vit.scratch_epochs=1", "vit.eval_epochs=[1]", "evaluate.episodes=1",
        "individual.epochs=1", "vit.fewshot_depths=[2]"]


def _cfg(weights, *extra: str):
    return load_config("vit-smoke", None, [*FAST, f"vit.ancestry_weights='{weights}'", *extra])


def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every tensor random, so a block copied from the file is recognisable by equality."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


@pytest.fixture
def tiny():
    """A custom-shaped timm ViT that no timm name builds: 16 px, patch 4, 1 channel, width 32, 3 blocks, 7 classes."""
    return _randomize(VisionTransformer(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=3, num_heads=2,
                                        class_token=False, global_pool="avg", num_classes=7), 1)


@pytest.fixture(scope="module")
def deit():
    """A real timm architecture by name, at 32 px and 3 channels (so 16 px glyphs need both adaptations)."""
    import timm

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32, in_chans=3,
                                  num_classes=10)
    return _randomize(model, 2)


def _blocks(state, indices):
    return {k: v for k, v in state.items() if k.startswith(tuple(f"blocks.{i}." for i in indices))}


def _assert_gene_blocks_from(gene_dir, state, same: bool = True):
    gene = TransformerGene.load(gene_dir)
    blocks = _blocks(gene.tensors, gene.block_indices)
    assert blocks and set(blocks) == set(_blocks(state, gene.block_indices))
    equal = [torch.equal(t, state[k]) for k, t in blocks.items()]
    assert all(equal) if same else not any(equal)
    return gene


def test_network_directory_used_as_is_then_a_changed_file_retrains(tiny, tmp_path):
    save_ancestry(tiny, tmp_path / "anc")
    cfg = _cfg(tmp_path / "anc", "vit.ancestry_epochs=0", "vit.ancestry_probe_epochs=1")
    report = run_vit(cfg, tmp_path / "run", progress=False)
    anc = report["ancestry"]
    assert anc["user"]["kind"] == "network" and anc["user"]["timm"] is None and anc["user"]["adapted"] == []
    assert anc["preset"] is None and anc["depth"] == 3 and not anc["cached"]
    assert anc["probe"]["epochs"] == 1 and anc["gradient_share"]  # the criterion's record came from the probe
    state = tiny.state_dict()
    # the run's ancestry: the file's body, a fresh head for the source classes
    cached, _ = load_network(tmp_path / "run" / "cache" / "ancestry")
    got = cached.state_dict()
    assert all(torch.equal(got[k], v) for k, v in state.items() if not k.startswith("head."))
    assert got["head.weight"].shape == (report["data"]["source_classes"], 32) != state["head.weight"].shape
    _assert_gene_blocks_from(tmp_path / "run" / "genes" / "heur-lg", state)
    # the aux net and the descendants copy the ancestry's shape
    tleg = TransformerGene.load(tmp_path / "run" / "genes" / "tleg")
    want = {"embed_dim": 32, "num_heads": 2, "patch_size": 4, "mlp_ratio": 4.0, "class_token": False,
            "global_pool": "avg", "in_chans": 1, "img_size": 16}
    assert {k: vit_config(tiny)[k] for k in want} == want
    assert {k: tleg.vit_cfg[k] for k in want} == want and tleg.aux_depth == 3
    assert {(r["method"], r["depth"]) for r in report["descendants"]["rows"]} == {
        (m, d) for m in ("heur-lg", "tleg") for d in (2, 4)}
    assert "the user's ViT" in (tmp_path / "run" / "report.md").read_text()

    assert run_vit(cfg, tmp_path / "run", progress=False)["ancestry"]["cached"]
    # a changed weights file (its sha256 is in the fingerprint) retrains, and the new blocks are used
    changed = _randomize(tiny, 3)
    save_ancestry(changed, tmp_path / "anc")
    again = run_vit(cfg, tmp_path / "run", progress=False)
    assert not again["ancestry"]["cached"] and again["ancestry"]["user"]["sha256"] != anc["user"]["sha256"]
    _assert_gene_blocks_from(tmp_path / "run" / "genes" / "heur-lg", changed.state_dict())


def test_fine_tuned_user_ancestry_starts_from_the_file(tiny, tmp_path):
    save_ancestry(tiny, tmp_path / "anc")
    cfg = _cfg(tmp_path / "anc", "vit.ancestry_epochs=1", "vit.ancestry_probe_epochs=0", "evaluate.methods=['heur-lg']",
               "vit.depths=[2]")
    report = run_vit(cfg, tmp_path / "run", progress=False)
    assert report["ancestry"]["probe"] is None and report["ancestry"]["fine_tune_epochs"] == 1
    assert report["ancestry"]["gradient_share"]
    _assert_gene_blocks_from(tmp_path / "run" / "genes" / "heur-lg", tiny.state_dict(), same=False)
    # fine-tuned from the file, not from a fresh init: a few small steps move the blocks far less than the
    # file's own spread (every tensor ~ N(0, 0.05^2))
    gene = TransformerGene.load(tmp_path / "run" / "genes" / "heur-lg")
    state = tiny.state_dict()
    for k, t in _blocks(gene.tensors, gene.block_indices).items():
        assert (t - state[k]).abs().max() < 0.05, k


def test_timm_named_safetensors_deit_adapted_to_the_data(deit, tmp_path):
    save_file(deit.state_dict(), str(tmp_path / "deit.safetensors"))
    cfg = _cfg(tmp_path / "deit.safetensors", "vit.ancestry_timm='deit_tiny_patch16_224'", "vit.ancestry_epochs=0",
               "vit.ancestry_probe_epochs=1", "evaluate.methods=['heur-lg']", "vit.depths=[2]")
    report = run_vit(cfg, tmp_path / "run", progress=False)
    user = report["ancestry"]["user"]
    assert user["kind"] == "file" and user["timm"] == "deit_tiny_patch16_224" and report["ancestry"]["depth"] == 12
    assert any("pos_embed resampled from a 2x2 to a 1x1" in a for a in user["adapted"])
    assert any("1 input channel(s) made from the file's 3" in a for a in user["adapted"])
    from learngene.safeio import sha256_file

    assert user["sha256"] == sha256_file(tmp_path / "deit.safetensors")
    gene = _assert_gene_blocks_from(tmp_path / "run" / "genes" / "heur-lg", deit.state_dict())
    assert gene.vit_cfg["class_token"] and gene.vit_cfg["global_pool"] == "token" and gene.vit_cfg["embed_dim"] == 192
    assert gene.vit_cfg["patch_size"] == 16 and gene.vit_cfg["in_chans"] == 1


def test_pth_checkpoint_with_wrapper_and_ddp_prefix(deit, tmp_path):
    """DeiT's own checkpoints are {"model": state_dict, ...}; DDP adds "module."; read with weights_only."""
    wrapped = {"model": {f"module.{k}": v for k, v in deit.state_dict().items()}, "epoch": 300}
    torch.save(wrapped, tmp_path / "deit.pth")
    cfg = _cfg(tmp_path / "deit.pth", "vit.ancestry_timm='deit_tiny_patch16_224'", "vit.ancestry_epochs=0",
               "vit.ancestry_probe_epochs=1", "evaluate.methods=['heur-lg']", "vit.depths=[2]")
    report = run_vit(cfg, tmp_path / "run", progress=False)
    assert report["ancestry"]["user"]["kind"] == "file"
    _assert_gene_blocks_from(tmp_path / "run" / "genes" / "heur-lg", deit.state_dict())


# ---------------------------------------------------------------------- refusals, all before anything trains
def _refused(cfg, out, error, match):
    with pytest.raises(error, match=match):
        run_vit(cfg, out, progress=False)
    assert not (out / "cache").exists()  # nothing trained, nothing cached


def test_config_refusals_at_load_time(tmp_path):
    with pytest.raises(ConfigError, match="vit.ancestry_timm = 'deit_tiny_patch16_224' needs vit.ancestry_weights"):
        load_config("vit-smoke", None, ["vit.ancestry_timm='deit_tiny_patch16_224'"])
    with pytest.raises(ConfigError, match="vit.ancestry_weights = .* is a URL"):
        load_config("vit-smoke", None, ["vit.ancestry_weights='https://example.org/deit.pth'"])
    with pytest.raises(ConfigError, match="vit.ancestry_epochs = 0 would leave the preset ancestry untrained"):
        load_config("vit-smoke", None, ["vit.ancestry_epochs=0"])
    with pytest.raises(ConfigError, match="vit.ancestry_probe_epochs >= 1"):
        _cfg(tmp_path / "x.pth", "vit.ancestry_epochs=0", "vit.ancestry_probe_epochs=0")
    with pytest.raises(ConfigError, match="vit.ancestry_probe_epochs = -1 must be an integer >= 0"):
        load_config("vit-smoke", None, ["vit.ancestry_probe_epochs=-1"])
    _cfg(tmp_path / "x.pth", "vit.ancestry_epochs=0", "vit.ancestry_probe_epochs=1")  # allowed: a linear probe


def test_file_refusals(tiny, tmp_path):
    _refused(_cfg(tmp_path / "missing.safetensors", "vit.ancestry_timm='deit_tiny_patch16_224'"), tmp_path / "a",
             ConfigError, "vit.ancestry_weights = .*missing.safetensors.* does not exist")
    (tmp_path / "w.npz").write_bytes(b"x")
    _refused(_cfg(tmp_path / "w.npz", "vit.ancestry_timm='deit_tiny_patch16_224'"), tmp_path / "b",
             ConfigError, r"has suffix '\.npz'")
    save_file(tiny.state_dict(), str(tmp_path / "tiny.safetensors"))
    _refused(_cfg(tmp_path / "tiny.safetensors"), tmp_path / "c", ConfigError,
             "is a bare state dict: set vit.ancestry_timm")
    (tmp_path / "empty").mkdir()
    _refused(_cfg(tmp_path / "empty"), tmp_path / "d", ConfigError, "directory without network.json")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    _refused(_cfg(tmp_path / "bad.safetensors", "vit.ancestry_timm='deit_tiny_patch16_224'"), tmp_path / "e",
             ConfigError, "cannot be read as a safetensors file")


class _Payload:  # an arbitrary object: a .pth holding one must never be unpickled
    pass


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pth_needing_arbitrary_unpickling_is_refused(tiny, tmp_path):
    torch.save({"model": tiny.state_dict(), "extra": _Payload()}, tmp_path / "evil.pth")
    _refused(_cfg(tmp_path / "evil.pth", "vit.ancestry_timm='deit_tiny_patch16_224'"), tmp_path / "a",
             ConfigError, r"weights_only=True")
    with open(tmp_path / "plain.pt", "wb") as fh:  # plain pickle, not a torch file
        pickle.dump({"a": 1}, fh)
    _refused(_cfg(tmp_path / "plain.pt", "vit.ancestry_timm='deit_tiny_patch16_224'"), tmp_path / "b",
             ConfigError, "cannot be read as a torch state dict")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "nostate.pth")
    _refused(_cfg(tmp_path / "nostate.pth", "vit.ancestry_timm='deit_tiny_patch16_224'"), tmp_path / "c",
             ConfigError, "does not hold a state dict")


def test_timm_name_refusals(tiny, deit, tmp_path):
    save_file(deit.state_dict(), str(tmp_path / "deit.safetensors"))
    _refused(_cfg(tmp_path / "deit.safetensors", "vit.ancestry_timm='deit_tiny_patch16_2244'"), tmp_path / "a",
             ConfigError, "vit.ancestry_timm = 'deit_tiny_patch16_2244' is not a timm model name.*did you mean "
                          "deit_tiny_patch16_224")
    _refused(_cfg(tmp_path / "deit.safetensors", "vit.ancestry_timm='resnet18'"), tmp_path / "b",
             ConfigError, "vit.ancestry_timm = 'resnet18'")
    _refused(_cfg(tmp_path / "deit.safetensors", "vit.ancestry_timm='deit_tiny_distilled_patch16_224'"),
             tmp_path / "c", ConfigError, "VisionTransformerDistilled .*not a distilled DeiT")
    _refused(_cfg(tmp_path / "deit.safetensors", "vit.ancestry_timm='deit_tiny_patch16_224'", "data.image_size=24"),
             tmp_path / "d", ConfigError, "data.image_size = 24 cannot be cut into the 16x16 patches.*multiple of 16")


def test_weights_that_do_not_fit_are_refused(tiny, deit, tmp_path):
    save_file(tiny.state_dict(), str(tmp_path / "tiny.safetensors"))
    _refused(_cfg(tmp_path / "tiny.safetensors", "vit.ancestry_timm='deit_tiny_patch16_224'"), tmp_path / "a",
             ModelError, r"missing from it: \['cls_token'.*no place in the model: \['fc_norm")
    state = deit.state_dict()
    state["blocks.3.mlp.fc1.weight"] = state["blocks.3.mlp.fc1.weight"][:100]
    save_file(state, str(tmp_path / "cut.safetensors"))
    _refused(_cfg(tmp_path / "cut.safetensors", "vit.ancestry_timm='deit_tiny_patch16_224'"), tmp_path / "b",
             ModelError, r"blocks\.3\.mlp\.fc1\.weight has shape \(100, 192\) in the file but \(768, 192\)")
    state = deit.state_dict()
    state["pos_embed"] = state["pos_embed"][:, :4]  # 1 class token + 3 positions: no square grid
    save_file(state, str(tmp_path / "pos.safetensors"))
    _refused(_cfg(tmp_path / "pos.safetensors", "vit.ancestry_timm='deit_tiny_patch16_224'"), tmp_path / "c",
             ModelError, "pos_embed .* not a square grid")


def test_directory_refusals(tiny, tmp_path):
    from learngene.models.expansion import ExpandedViT
    from learngene.vit.train import NetworkRecord

    save_network(ExpandedViT(NetworkRecord(tiny).config(), "linear", 3, seed=0), tmp_path / "aux")
    _refused(_cfg(tmp_path / "aux"), tmp_path / "a", ConfigError, "not a plain ViT")
    save_ancestry(tiny, tmp_path / "anc")
    _refused(_cfg(tmp_path / "anc", "data.image_size=18"), tmp_path / "b", ConfigError,
             "data.image_size = 18 cannot be cut into the 4x4 patches")
    (tmp_path / "anc" / "model.safetensors").write_bytes(b"damaged")
    _refused(_cfg(tmp_path / "anc"), tmp_path / "c", ConfigError, "vit.ancestry_weights = ")
    # a previous run's cache/ancestry is a valid ancestry, but not inside the run that rewrites it
    run = tmp_path / "run"
    save_ancestry(tiny, run / "cache" / "ancestry")
    with pytest.raises(ConfigError, match="lies inside this run's cache"):
        run_vit(_cfg(run / "cache" / "ancestry"), run, progress=False)
