import torch
from torch import nn

from learngene.collective.ewc import EWC
from learngene.collective.fisher import diagonal_fisher


def test_normalized_fisher_stays_bounded_over_many_tasks():
    """Summed over tasks the raw Fisher grows with T; scaled, lr * lambda keeps bounding the EWC step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    ewc = EWC(10.0, params=lambda n, p: True, normalize=True)
    expected = None
    for _ in range(12):
        x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
        ewc.consolidate(model, x, y)
        f = diagonal_fisher(model, x, y, params=lambda n, p: True)
        top = max(float(v.max()) for v in f.values())
        f = {k: v / top for k, v in f.items()}  # every task weighs the same ...
        expected = f if expected is None else {k: expected[k] + f[k] for k in f}
        top = max(float(v.max()) for v in expected.values())
        expected = {k: v / top for k, v in expected.items()}  # ... and the sum stays at max 1
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
    assert max(float(f.max()) for f in ewc.fisher.values()) == 1.0
    for k, v in ewc.fisher.items():
        assert torch.allclose(v, expected[k], atol=1e-6)
