"""downloads: the list of what an edit reads, checked against a fake hub cache without network, and
`--dry_run` printing the whole plan and one `hf download` line per missing item."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers_hub import fake_hub_cache, fake_network, no_connection, use_cache

from sana_streaming.cli import main
from sana_streaming.config import load_config
from sana_streaming.downloads import (
    TEXT_ENCODER_PATTERNS,
    VAE_PATTERNS,
    Need,
    check_needs,
    edit_needs,
    report_missing,
    resolve_needs,
    text_encoder_source,
    vae_source,
)
from sana_streaming.hub import HubError, Source

DIT = "hf://Efficient-Large-Model/SANA-Streaming/dit/sana_streaming_ar.pth"
VIDEO = "hf://Efficient-Large-Model/SANA-Streaming/source/09_style_transfer_source.mp4"
GEMMA = {"config.json": b"{}", "tokenizer_config.json": b"{}", "tokenizer.json": b"{}"}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """DiT checkpoint and demo video cached; the VAE absent; Gemma without its weights. HF_HUB_OFFLINE=1."""
    root = tmp_path / "hub"
    fake_hub_cache(root, "Efficient-Large-Model/SANA-Streaming", {
        "dit/sana_streaming_ar.pth": b"dit", "source/09_style_transfer_source.mp4": b"video",
    })  # fmt: skip
    fake_hub_cache(root, "Efficient-Large-Model/gemma-2-2b-it", GEMMA)
    use_cache(monkeypatch, root, offline=True)
    return root


def test_sources_of_the_release_config() -> None:
    config = load_config("sana_streaming_2b_720p")
    assert vae_source(config.vae.vae_pretrained) == Source(
        "hf://Lightricks/LTX-2/vae", "folder", VAE_PATTERNS, VAE_PATTERNS
    )
    assert vae_source("hf://Lightricks/LTX-2@v2").path == "hf://Lightricks/LTX-2@v2/vae"
    assert vae_source("hf://o/r@refs/pr/3").path == "hf://o/r@refs/pr/3/vae"
    assert vae_source("hf://o/r@v1/other").path == "hf://o/r@v1/other"
    te = text_encoder_source(config.text_encoder)
    assert (te.path, te.allow_patterns) == ("hf://Efficient-Large-Model/gemma-2-2b-it", TEXT_ENCODER_PATTERNS)
    assert text_encoder_source(config.text_encoder, "hf://o/gemma@abc").path == "hf://o/gemma@abc"


def test_edit_needs_follow_the_inputs(tmp_path: Path) -> None:
    config = load_config("sana_streaming_2b_720p")
    keys = [n.key for n in edit_needs(config, model_path=DIT, video_path=VIDEO)]
    assert keys == ["model_path", "vae", "text_encoder", "video_path"]
    needs = edit_needs(
        config,
        model_path=DIT,
        video_path=VIDEO,
        input_latent_path="hf://o/r/l.pt",
        input_text_embed_path="t.pt",
    )
    assert [(n.key, n.source.path) for n in needs] == [
        ("model_path", DIT),
        ("vae", "hf://Lightricks/LTX-2/vae"),
        ("input_latent_path", "hf://o/r/l.pt"),
        ("input_text_embed_path", "t.pt"),
    ]
    assert edit_needs(config, model_path=None, video_path=str(tmp_path / "clip.mp4")) == []


def test_check_needs_reads_the_cache_without_network(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_cache(monkeypatch, cache, offline=False)
    needs = edit_needs(load_config("sana_streaming_2b_720p"), model_path=DIT, video_path=VIDEO)
    with fake_network(monkeypatch, no_connection) as network:
        statuses = check_needs(needs)
    assert [r for r in network.requests if "/api/agent" not in r] == []
    present = {s.need.key: s.local for s in statuses}
    assert present["model_path"].read_bytes() == b"dit"
    assert present["video_path"].read_bytes() == b"video"
    assert present["vae"] is None and present["text_encoder"] is None  # Gemma lacks *.safetensors


def test_report_missing_lists_every_download(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    needs = [*edit_needs(load_config("sana_streaming_2b_720p"), model_path=DIT, video_path=VIDEO)]
    needs.append(Need("input_text_embed_path", Source("/nowhere/text.pt")))
    with pytest.raises(HubError) as err:
        report_missing(check_needs(needs))
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "hf download Lightricks/LTX-2 --include vae/config.json --include 'vae/*.safetensors'"
        "  # vae: hf://Lightricks/LTX-2/vae",
        "hf download Efficient-Large-Model/gemma-2-2b-it --include '*.json' --include '*.safetensors' "
        "--include tokenizer.model  # text_encoder: hf://Efficient-Large-Model/gemma-2-2b-it",
        "missing: input_text_embed_path: /nowhere/text.pt does not exist",
    ]
    assert str(err.value).startswith("3 of 5 needed files or folders") and "HF_HUB_OFFLINE=1" in str(
        err.value
    )
    report_missing(check_needs(needs[:1]))  # all present: nothing printed, no error
    assert capsys.readouterr().err == ""


def test_resolve_needs_names_everything_missing(cache: Path) -> None:
    needs = edit_needs(load_config("sana_streaming_2b_720p"), model_path=DIT, video_path=VIDEO)
    with pytest.raises(HubError) as err:
        resolve_needs(needs)
    message = str(err.value)
    assert message.startswith("2 needed files or folders are not available: ")
    assert "hf://Lightricks/LTX-2/vae is not in the local hub cache" in message
    assert (
        "hf://Efficient-Large-Model/gemma-2-2b-it is only partly in the local hub cache (no *.safetensors)"
        in (message)
    )
    assert "\n" not in message
    found = resolve_needs(needs[:1] + needs[3:])
    assert found["model_path"].read_bytes() == b"dit" and found["video_path"].read_bytes() == b"video"


def test_missing_summaries_say_hf_auth_login_once(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The gated Gemma repo needs `hf auth login`: the missing-files summary and the combined
    resolve error each carry the hint once, however many items are missing."""
    needs = edit_needs(load_config("sana_streaming_2b_720p"), model_path=DIT, video_path=VIDEO)
    with pytest.raises(HubError) as listed:
        report_missing(check_needs(needs))
    assert len(capsys.readouterr().err.splitlines()) == 2  # the hf download lines, no hint among them
    with pytest.raises(HubError) as resolved:
        resolve_needs(needs)
    for message in (str(listed.value), str(resolved.value)):
        assert message.count("hf auth login") == 1 and "HF_HUB_OFFLINE=1" in message and "\n" not in message
    single = needs[:1] + [need for need in needs if need.key == "vae"]
    with pytest.raises(HubError) as one:
        resolve_needs(single)
    assert str(one.value).count("hf auth login") == 1


def dry_run(tmp_path: Path, *flags: str) -> list[str]:
    return ["--dry_run", "--output_dir", str(tmp_path / "out"), *flags]


def test_dry_run_prints_the_whole_plan_then_every_missing_item(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(dry_run(tmp_path)) == 1
    out, err = capsys.readouterr()
    plan = dict(line.split(": ", 1) for line in out.splitlines())
    assert plan["model_path"].endswith("dit/sana_streaming_ar.pth") and Path(plan["model_path"]).is_file()
    assert plan["video_path"].endswith("source/09_style_transfer_source.mp4")
    assert plan["vae"] == "hf://Lightricks/LTX-2/vae (missing)"
    assert plan["text_encoder"] == "hf://Efficient-Large-Model/gemma-2-2b-it (missing)"
    assert plan["prompt"].startswith("Transform the entire scene")
    lines = err.splitlines()
    assert [line.split("  # ")[1] for line in lines[:2]] == [
        "vae: hf://Lightricks/LTX-2/vae",
        "text_encoder: hf://Efficient-Large-Model/gemma-2-2b-it",
    ]
    assert lines[2].startswith("sana-streaming: error: 2 of 4 needed files or folders") and len(lines) == 3


def test_dry_run_all_cached_exits_0(cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_hub_cache(cache, "Efficient-Large-Model/gemma-2-2b-it", {"model.safetensors": b"w"})
    fake_hub_cache(cache, "Lightricks/LTX-2", {"vae/config.json": b"{}", "vae/m.safetensors": b"w"})
    flags = ("--model_path", "hf://Efficient-Large-Model/SANA-Streaming@main/dit/sana_streaming_ar.pth")
    assert main(dry_run(tmp_path, *flags)) == 0
    out, err = capsys.readouterr()
    plan = dict(line.split(": ", 1) for line in out.splitlines())
    assert (
        Path(plan["vae"], "m.safetensors").is_file() and Path(plan["text_encoder"], "config.json").is_file()
    )
    assert Path(plan["model_path"]).read_bytes() == b"dit"
    assert err == ""


def test_dry_run_with_embeddings_needs_no_text_encoder(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    embeds = tmp_path / "text.pt"
    embeds.write_bytes(b"x")
    assert main(dry_run(tmp_path, "--input_text_embed_path", str(embeds))) == 1
    out, err = capsys.readouterr()
    assert "text_encoder" not in out and "text_encoder" not in err
    assert f"input_text_embed_path: {embeds}" in out.splitlines()
    assert err.splitlines()[0].endswith("# vae: hf://Lightricks/LTX-2/vae")
