"""Market approval: only a manifest signed by a trusted publisher and approved for the market loads."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from conftest import StageHarness, make_steer_model, write_manifest

from edgert.runtime import cli, signing
from edgert.runtime.config import ConfigError, from_dict
from edgert.runtime.engine import Engine
from edgert.runtime.framepool import FramePool
from edgert.runtime.manifest import ModelError
from edgert.runtime.signing import ApprovalError, approved_manifest, load_approved
from edgert.runtime.stage import StageContext
from edgert.runtime.stages.infer import InferStage
from edgert.runtime.stages.preprocess import TENSOR_STREAM, PreprocessStage

ROOT = Path(__file__).resolve().parent.parent
ZOO_MODELS = ("pilotnet", "pilotnet-fp16", "pilotnet-int8")


@pytest.fixture(scope="module")
def publisher(tmp_path_factory) -> tuple[Path, Path]:
    """A test publisher's key pair: (private key, trusted-keys folder holding only its public key)."""
    d = tmp_path_factory.mktemp("keys")
    priv, pub = signing.keygen(d / "private", "test-pub")
    trusted = d / "trusted"
    trusted.mkdir()
    shutil.copy(pub, trusted)
    return priv, trusted


@pytest.fixture
def signed(tmp_path, publisher) -> Path:
    """A tiny real model approved for "eu", signed by the test publisher."""
    d = tmp_path / "tiny"
    d.mkdir()
    make_steer_model(d / "model.onnx")
    write_manifest(d)
    text = (d / "manifest.toml").read_text()
    (d / "manifest.toml").write_text(text.replace('markets = ["EU"]', 'markets = ["eu", "sim"]\npublisher = "test-pub"'))
    signing.sign(d, publisher[0])
    return d


def test_signed_and_approved_model_loads_and_runs(signed, publisher):
    m = load_approved(signed, "eu", publisher[1])
    assert m.publisher == "test-pub" and m.markets == ("eu", "sim")
    assert load_approved(signed, "EU", publisher[1]).name == "tiny"  # market names compare case-insensitively
    eng = Engine(m, providers=["CPUExecutionProvider"])
    out = eng.run(eng.bind({"image": np.ones((1, 3, 8, 8), np.float32)}))
    assert float(out["steer"][0, 0]) == pytest.approx(0.5)


def test_unsigned_model_is_refused_with_the_fix(signed, publisher):
    (signed / "manifest.sig").unlink()
    with pytest.raises(ApprovalError, match=r"model 'tiny' .* is unsigned: no manifest.sig; .*`edgert models sign tiny --key"):
        load_approved(signed, "eu", publisher[1])


def test_altered_manifest_is_refused(signed, publisher):
    text = (signed / "manifest.toml").read_text()
    (signed / "manifest.toml").write_text(text.replace('markets = ["eu", "sim"]', 'markets = ["eu", "sim", "cn"]'))
    with pytest.raises(ApprovalError, match=r"signature does not match manifest.toml: the manifest was altered after "
                                            r"signing.*Restore the published manifest"):
        load_approved(signed, "cn", publisher[1])


def test_altered_model_file_is_refused_through_the_signed_sha256(signed, publisher):
    m = load_approved(signed, "eu", publisher[1])  # the manifest is intact ...
    make_steer_model(signed / "model.onnx", weight=5.0)  # ... but the model behind it was swapped
    with pytest.raises(ModelError, match=r"sha256 .* does not match the manifest's"):
        Engine(m, providers=["CPUExecutionProvider"])


def test_signature_by_an_untrusted_key_is_refused(signed, publisher, tmp_path):
    mallory, _ = signing.keygen(tmp_path / "mallory", "test-pub")  # claims to be test-pub
    signing.sign(signed, mallory)
    with pytest.raises(ApprovalError, match=r"signed by a key that is not 'test-pub''s"):
        load_approved(signed, "eu", publisher[1])
    text = (signed / "manifest.toml").read_text()
    (signed / "manifest.toml").write_text(text.replace('publisher = "test-pub"', 'publisher = "mallory"'))
    signing.sign(signed, mallory)
    with pytest.raises(ApprovalError, match=r"publisher 'mallory' is not trusted here \(no .*mallory.pub\); install"):
        load_approved(signed, "eu", publisher[1])


def test_unapproved_market_is_refused(signed, publisher):
    with pytest.raises(ApprovalError, match=r"model 'tiny' 0.0.1 is not approved for market 'cn' \(approved: eu, sim\); "
                                            r"use a variant approved for 'cn'"):
        load_approved(signed, "cn", publisher[1])


def test_rotation_trusts_old_and_new_key_while_both_are_listed(signed, publisher, tmp_path):
    new_priv, new_pub = signing.keygen(tmp_path / "new", "test-pub")
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "test-pub.pub").write_bytes((publisher[1] / "test-pub.pub").read_bytes() + new_pub.read_bytes())
    assert load_approved(signed, "eu", trusted)  # signed with the old key
    signing.sign(signed, new_priv)
    assert load_approved(signed, "eu", trusted)  # re-signed with the new one
    with pytest.raises(ApprovalError, match="signed by a key that is not"):
        load_approved(signed, "eu", publisher[1])  # the old key alone no longer vouches for it


def test_sign_refuses_what_it_cannot_vouch_for(tmp_path, publisher, signed):
    text = (signed / "manifest.toml").read_text()
    (signed / "manifest.toml").write_text(text.replace('publisher = "test-pub"\n', ""))
    with pytest.raises(ModelError, match=r"no 'publisher' in \[model\]; add publisher = \"NAME\""):
        signing.sign(signed, publisher[0])
    (signed / "manifest.toml").write_text(text)
    make_steer_model(signed / "model.onnx", weight=2.0)
    with pytest.raises(ModelError, match="does not match the manifest's"):
        signing.sign(signed, publisher[0])  # never sign a manifest that does not pin its model
    assert stat.S_IMODE(publisher[0].stat().st_mode) == 0o600
    with pytest.raises(ModelError, match="already exists"):
        signing.keygen(publisher[0].parent, "test-pub")


def _stage_ctx(h: StageHarness, cls: type) -> StageContext:
    return StageContext(cls.name, h.cfg, h.run_id, h.endpoints, h.zmq, h.stop)


@pytest.mark.parametrize("stage_cls", [InferStage, PreprocessStage])
def test_pipeline_stages_refuse_an_unapproved_model(signed, publisher, stage_cls):
    cfg = from_dict({"pipeline": {"market": "cn"}, "camera": {"width": 64, "height": 48},
                     "infer": {"model": str(signed), "trusted_keys": str(publisher[1])}})
    h = StageHarness(cfg)
    try:
        with pytest.raises(ApprovalError, match="not approved for market 'cn'"):
            stage_cls(_stage_ctx(h, stage_cls)).setup()
    finally:
        h.close()


@pytest.mark.parametrize("case, match", [
    ("unapproved", r"model 'tiny' .* is not approved for market 'cn' \(approved: eu, sim\); use a variant"),
    ("unsigned", r"model 'tiny' .* is unsigned: no manifest.sig; its publisher signs it"),
    ("altered", r"the signature does not match manifest.toml: the manifest was altered after signing"),
])
def test_supervisor_refuses_an_unapproved_model_before_any_stage_starts(signed, publisher, case, match):
    from edgert.runtime import shm
    from edgert.runtime.supervisor import Supervisor

    market = "cn" if case == "unapproved" else "eu"
    if case == "unsigned":
        (signed / signing.SIG_FILE).unlink()
    elif case == "altered":
        text = (signed / "manifest.toml").read_text()
        (signed / "manifest.toml").write_text(text.replace('markets = ["eu", "sim"]', 'markets = ["eu", "sim", "cn"]'))
    cfg = from_dict({"pipeline": {"market": market, "mode": "processes"},
                     "infer": {"model": str(signed), "trusted_keys": str(publisher[1])}})
    sup = Supervisor(cfg, duration_s=1.0)
    with pytest.raises(ApprovalError, match=match):
        sup.run()
    assert not sup.handles and sup.run_dir is None  # refused before any stage process, pool or socket existed
    assert not shm.list_segments(sup.run_id)
    # and through the CLI: one line, the error and the fix, exit status 2 (not a stage's start-up failure)
    cfg_file = signed.parent / "run.toml"
    cfg_file.write_text(f'[pipeline]\nmarket = "{market}"\n[infer]\nmodel = "{signed}"\n'
                        f'trusted_keys = "{publisher[1]}"\n')
    assert cli.main(["run", str(cfg_file), "--duration", "1"]) == 2


def test_infer_stage_loads_a_signed_approved_model(signed, publisher):
    cfg = from_dict({"pipeline": {"market": "eu"}, "infer": {"model": str(signed), "trusted_keys": str(publisher[1]),
                                                              "providers": ["CPUExecutionProvider"], "cache_dir": "off"}})
    h = StageHarness(cfg)
    pool = FramePool.create(h.run_id, TENSOR_STREAM, cfg.infer.pool_slots, 3 * 8 * 8 * 4)
    stage = InferStage(_stage_ctx(h, InferStage))
    try:
        stage.setup()  # verified, sessions made, one binding per tensor slot: ready to run
        assert stage.engine.manifest.publisher == "test-pub"
        assert len(stage.bindings) == cfg.infer.pool_slots
    finally:
        stage.teardown()
        pool.close()
        pool.unlink()
        h.close()


def test_shipped_models_are_signed_and_approved_for_sim_only():
    trusted = ROOT / "models" / "publishers"
    for name in ZOO_MODELS:
        m = load_approved(ROOT / "models" / name, "sim", trusted)
        assert m.publisher == "edgert-sim"
        with pytest.raises(ApprovalError, match="not approved for market 'eu'"):
            load_approved(ROOT / "models" / name, "eu", trusted)
    assert approved_manifest(from_dict({})).name == "pilotnet"  # the default config: market "sim"
    leaked = [p for p in (ROOT / "models").rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()[:64]]
    assert not leaked, "a publisher's private key must never be in the repository"


def test_config_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"pipeline.market: 'EU ' is not a market name"):
        from_dict({"pipeline": {"market": "EU "}})
    cfg = from_dict({"infer": {"trusted_keys": "keys"}}, base_dir=tmp_path)
    assert cfg.trusted_keys_dir() == tmp_path / "keys"
    assert from_dict({}).trusted_keys_dir() == ROOT / "models" / "publishers"


def test_models_cli_keygen_sign_verify(tmp_path, capsys):
    zoo = tmp_path / "zoo"
    d = zoo / "tiny"
    d.mkdir(parents=True)
    make_steer_model(d / "model.onnx")
    write_manifest(d)
    text = (d / "manifest.toml").read_text().replace('markets = ["EU"]', 'markets = ["eu"]\npublisher = "acme"')
    (d / "manifest.toml").write_text(text)
    assert cli.main(["models", "keygen", "--out", str(tmp_path / "k"), "--name", "acme"]) == 0
    assert cli.main(["models", "verify", "tiny", "--zoo", str(zoo), "--trusted-keys", str(tmp_path / "k")]) == 0
    assert "signature FAILED: model 'tiny'" in capsys.readouterr().out  # integrity ok, signature missing
    assert cli.main(["models", "sign", "tiny", "--zoo", str(zoo), "--key", str(tmp_path / "k" / "acme.pem")]) == 0
    assert cli.main(["models", "verify", "tiny", "--zoo", str(zoo), "--trusted-keys", str(tmp_path / "k")]) == 0
    assert "signed by acme, approved for eu" in capsys.readouterr().out
