"""Flow DPM-Solver++ against the release's run (golden `dpm_solver`) and its documented grid."""

import torch
from golden import golden, golden_dit_config, golden_state_dict, rel_err

from sana_streaming import build_dit
from sana_streaming.sampling.dpm_solver import flow_time_grid, sample_flow_dpm_solver


def test_time_grid_50_steps_matches_the_release_table():
    grid = flow_time_grid(50, 8.0)
    assert grid.dtype == torch.float32 and grid[-1].item() == 0.0
    expected_head = [0.999875, 0.997328, 0.994690, 0.991953, 0.989114]
    assert torch.allclose(grid[:5], torch.tensor(expected_head), atol=1e-6)
    assert torch.allclose(grid[-3:-1], torch.tensor([0.249805, 0.140228]), atol=1e-6)
    truncated = (grid[:50] * 1000).long().tolist()
    assert truncated[:6] == [999, 997, 994, 991, 989, 986] and truncated[-3:] == [337, 249, 140]


def test_golden_grid_calls_and_latents():
    g = golden("dpm_solver")
    assert torch.allclose(flow_time_grid(6, 8.0), g["time_grid"], atol=0, rtol=0)
    model = build_dit(golden_dit_config("bidirectional"), dtype=torch.float32)
    model.load_state_dict(golden_state_dict("bidirectional"))
    caption = torch.cat([g["input.negative_y"], g["input.y"]])
    mask = torch.cat([g["input.negative_mask"], g["input.mask"]])
    source = torch.cat([g["input.source"], g["input.source"]])
    calls = []

    def velocity(x, t):
        v = model(x, t, caption, mask, source)
        calls.append((x, t, v))
        return v

    out = sample_flow_dpm_solver(velocity, g["input.noise"], steps=6, shift=8.0, cfg_scale=6.0)
    assert len(calls) == 6
    for k, (x, t, v) in enumerate(calls):
        assert torch.equal(x[:1], x[1:])  # batch order [uncond, cond] on the same state
        assert rel_err(x[:1], g[f"call.{k}.x"]) <= 1e-4, k
        torch.testing.assert_close(t, g[f"call.{k}.t_input"])
        assert rel_err(v, g[f"call.{k}.velocity"]) <= 1e-4, k
    assert rel_err(out, g["output.latents"]) <= 1e-3
    assert rel_err(out, g["call.5.data_pred"]) <= 1e-4  # the last step returns the last x0
