"""Sinusoidal time embedding, timestep broadcasting and the class embedding."""

from __future__ import annotations

import math

import pytest
import torch

from ddpm.nets.embeddings import ClassEmbedding, broadcast_timesteps, timestep_embedding


def test_timestep_embedding_is_the_papers_formula():
    # get_timestep_embedding of diffusion_tf: sin(t·f_i) then cos(t·f_i), f_i = 10000^(−i/(half−1)).
    t = torch.tensor([0, 1, 17, 999])
    emb = timestep_embedding(t, 8)
    frequencies = torch.tensor([10000.0 ** (-i / 3) for i in range(4)])
    angles = t[:, None].double() * frequencies.double()[None, :]
    expected = torch.cat([angles.sin(), angles.cos()], dim=1).float()
    assert emb.shape == (4, 8) and emb.dtype == torch.float32
    torch.testing.assert_close(emb, expected, rtol=1e-5, atol=1e-5)
    assert emb[0, 0] == 0 and emb[0, 4] == 1  # t = 0: sin 0, cos 0
    assert math.isclose(emb[1, 3].item(), math.sin(1e-4), rel_tol=1e-5)  # lowest frequency 1/10000


def test_timestep_embedding_odd_dim_is_zero_padded():
    emb = timestep_embedding(torch.tensor([5.0, 6.0]), 7)
    assert emb.shape == (2, 7)
    assert torch.equal(emb[:, -1], torch.zeros(2))
    torch.testing.assert_close(emb[:, :6], timestep_embedding(torch.tensor([5.0, 6.0]), 6))


def test_integer_and_float_timesteps_embed_alike():
    torch.testing.assert_close(
        timestep_embedding(torch.tensor([3, 400]), 16), timestep_embedding(torch.tensor([3.0, 400.0]), 16)
    )


@pytest.mark.parametrize("t", [7, 7.0, torch.tensor(7), torch.tensor(7.0), torch.full((3,), 7)])
def test_broadcast_timesteps_gives_one_value_per_sample(t):
    out = broadcast_timesteps(t, 3, torch.device("cpu"))
    assert out.shape == (3,)
    assert torch.equal(out.float(), torch.full((3,), 7.0))


def test_broadcast_timesteps_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"timesteps of shape \(2, 1\) do not match batch size 2"):
        broadcast_timesteps(torch.zeros(2, 1), 2, torch.device("cpu"))


def test_class_embedding_null_label_is_the_extra_row():
    embedding = ClassEmbedding(num_classes=3, embed_dim=4)
    out = embedding(None, 2, torch.device("cpu"))
    assert torch.equal(out, embedding.embedding.weight[3].expand(2, 4))
    assert torch.equal(
        embedding(torch.tensor([1, 3]), 2, torch.device("cpu"))[0], embedding.embedding.weight[1]
    )
