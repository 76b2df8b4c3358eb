#!/usr/bin/python3
"""Independent PyTorch reference of the losses and the relative penalty of docs/paper.md §2-§3.

Written from the paper's formulas, one anchor at a time with plain Python index lists, so that it shares nothing
with trainer/loss/loss.cc but the definitions. Float64 throughout.

    /usr/bin/python3 loss_reference.py --out_dir DIR

writes the inputs and golden outputs as .npy files and an index (DIR/index.txt) that loss_golden_test.cc reads:

    DIR/<case>/{anchors,candidates,positive,exclude,weights,groups}.npy
    DIR/<case>/<loss>_t<tau>_k<K>_{loss,grad_anchors,grad_candidates}.npy   one line "<case> <loss> <tau> <K> <prefix>"
    DIR/<case>/penalty_t<tau>_{r,entropy}.npy                                one line "<case> penalty <tau> 0 <prefix>"

The gradients are those of sum_i weights[i] * L_i with respect to the anchors and the candidates as two separate
tensors (in the batch form they hold the same values). `groups` numbers the distinct candidate rows: rows with the
same group are exact duplicates (see GROUPS below for why the golden test needs them).
"""
import argparse
import math
import os

import numpy as np
import torch

TAUS = (0.01, 0.07, 0.2, 1.0)
LOSSES = ("infonce", "simple", "hard", "hard_simple", "nearest")

# Ties in the top-K (GROUPS). The cases duplicate candidate rows on purpose, so that an anchor sees exactly equal
# negative similarities, sometimes straddling the K-th place. Which of two tied candidates a top-K picks is then up
# to the implementation, but:
#   - the loss depends only on the chosen *values*, which are equal: it must match exactly;
#   - the anchor gradient sum_j dL/ds_ij c_j is the same whichever duplicate j is chosen (the rows c_j are equal);
#   - the candidate gradient of row j is sum_i dL/ds_ij a_i: a different choice moves it between the duplicates,
#     while its sum over each group of duplicates stays the same. The golden test compares those group sums.
# The duplicates are never an anchor's positive: `nearest` = max(s_max - s_ii, 0) would then sit exactly on its kink
# (s_max = s_ii), where any value in [0, 1] is a valid subgradient and two correct implementations may differ.


def negatives_of(i, num_candidates, positive, exclude):
    return [k for k in range(num_candidates) if k != positive[i] and k != exclude[i]]


def anchor_loss(s, i, positive, exclude, loss, tau, hard_k):
    """docs/paper.md §2 for anchor i; s is the (n, C) similarity matrix."""
    negs = negatives_of(i, s.shape[1], positive, exclude)
    s_pos = s[i, positive[i]]
    s_neg = s[i, negs]
    if loss in ("hard", "hard_simple", "nearest"):
        count = 1 if loss == "nearest" else min(hard_k, len(negs))
        s_neg = torch.sort(s_neg, descending=True).values[:count]  # the K most similar negatives
    if loss in ("infonce", "hard"):
        # Eq 1: -log(exp(s_ii/tau) / (exp(s_ii/tau) + sum_k exp(s_ik/tau))), the denominator as a stable logsumexp.
        return torch.logsumexp(torch.cat([s_pos.view(1), s_neg]) / tau, 0) - s_pos / tau
    if loss == "simple":
        return -s_pos + s_neg.sum() / (len(negs) + 1)  # lambda = 1/C, C = the positive plus the negatives
    if loss == "hard_simple":
        return -s_pos + s_neg.mean()
    if loss == "nearest":
        return torch.clamp(s_neg[0] - s_pos, min=0.0)
    raise ValueError(loss)


def losses(anchors, candidates, positive, exclude, loss, tau, hard_k):
    s = anchors @ candidates.T
    return torch.stack([anchor_loss(s, i, positive, exclude, loss, tau, hard_k) for i in range(s.shape[0])])


def relative_penalty(s, positive, exclude, tau):
    """§3: r_i(s_ij) = exp(s_ij/tau) / sum_{k negative} exp(s_ik/tau); zero at the positive and excluded entries."""
    r = torch.zeros_like(s)
    entropy = torch.zeros(s.shape[0], dtype=s.dtype)
    for i in range(s.shape[0]):
        negs = negatives_of(i, s.shape[1], positive, exclude)
        r[i, negs] = torch.softmax(s[i, negs] / tau, 0)
        p = r[i, negs]
        entropy[i] = -(p[p > 0] * torch.log(p[p > 0])).sum()  # nats, 0 log 0 = 0
    return r, entropy


def unit(x):
    return x / x.norm(dim=1, keepdim=True)


def make_cases(seed=0, dim=8):
    g = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)
    cases = {}

    # Memory-bank form: 6 anchors against a bank of 20, no exclusion. The positive bank entry is a noisy copy of
    # its anchor. Bank rows 3, 5 and 12 are identical and anchor 2 *is* that row: anchor 2 sees three tied negatives
    # at s = 1 (the top-1 and top-2 boundaries fall inside the tie); every anchor sees the triple tie somewhere.
    anchors = unit(randn(6, dim))
    anchors[4] = anchors[1]  # duplicated anchors: identical loss rows
    positive = [0, 1, 2, 7, 9, 15]
    bank = unit(randn(20, dim))
    bank[positive] = unit(anchors + 0.5 * randn(6, dim))
    bank[5] = bank[3]
    bank[12] = bank[3]
    anchors[2] = bank[3]
    groups = list(range(20))
    groups[5] = groups[12] = 3
    cases["bank"] = dict(anchors=anchors, candidates=bank.clone(), positive=positive, exclude=[-1] * 6, groups=groups)

    # SimCLR batch form: B = 5 images, 2B = 10 views; anchor i's positive is its other view (i + B) mod 2B and it
    # excludes itself. Images 2 and 4 have identical views (z7 = z2, z9 = z4): every other anchor sees two pairs
    # of tied negatives.
    b = 5
    z = unit(randn(2 * b, dim))
    z[b:] = unit(z[:b] + 0.7 * randn(b, dim))
    z[7] = z[2]
    z[9] = z[4]
    groups = list(range(2 * b))
    groups[7], groups[9] = 2, 4
    cases["batch"] = dict(anchors=z.clone(), candidates=z.clone(), positive=[(i + b) % (2 * b) for i in range(2 * b)],
                          exclude=list(range(2 * b)), groups=groups)

    for case in cases.values():
        case["weights"] = torch.rand(len(case["positive"]), generator=g, dtype=torch.float64) + 0.5
    return cases


def hard_ks(num_negatives):
    return sorted({1, 2, 4, num_negatives, num_negatives + 3})


def tau_name(tau):
    return f"{tau:g}"


def write_golden(out_dir, seed=0):
    os.makedirs(out_dir, exist_ok=True)
    index = []
    for name, case in make_cases(seed).items():
        case_dir = os.path.join(out_dir, name)
        os.makedirs(case_dir, exist_ok=True)
        positive, exclude = case["positive"], case["exclude"]
        for key in ("anchors", "candidates", "weights"):
            np.save(os.path.join(case_dir, key + ".npy"), case[key].numpy())
        for key in ("positive", "exclude", "groups"):
            np.save(os.path.join(case_dir, key + ".npy"), np.asarray(case[key], dtype=np.int64))
        num_negatives = len(negatives_of(0, case["candidates"].shape[0], positive, exclude))
        for loss in LOSSES:
            for tau in TAUS:
                for hard_k in hard_ks(num_negatives) if loss.startswith("hard") else [0]:
                    a = case["anchors"].clone().requires_grad_(True)
                    c = case["candidates"].clone().requires_grad_(True)
                    value = losses(a, c, positive, exclude, loss, tau, hard_k)
                    (value * case["weights"]).sum().backward()
                    prefix = f"{name}/{loss}_t{tau_name(tau)}_k{hard_k}"
                    for suffix, tensor in (("loss", value), ("grad_anchors", a.grad), ("grad_candidates", c.grad)):
                        np.save(os.path.join(out_dir, f"{prefix}_{suffix}.npy"), tensor.detach().numpy())
                    index.append(f"{name} {loss} {tau_name(tau)} {hard_k} {prefix}")
        for tau in TAUS:
            r, entropy = relative_penalty(case["anchors"] @ case["candidates"].T, positive, exclude, tau)
            prefix = f"{name}/penalty_t{tau_name(tau)}"
            np.save(os.path.join(out_dir, prefix + "_r.npy"), r.numpy())
            np.save(os.path.join(out_dir, prefix + "_entropy.npy"), entropy.numpy())
            index.append(f"{name} penalty {tau_name(tau)} 0 {prefix}")
    with open(os.path.join(out_dir, "index.txt"), "w") as f:
        f.write("\n".join(index) + "\n")
    return index


def symmetric_views_loss(a, b, loss, tau, hard_k=0):
    """tempered-analyze's `loss`: rows of a and b (N, d) are positive pairs; L2-normalise, stack the 2N views, every
    view is an anchor against the other 2N - 1; mean over the 2N anchors. Returns (loss, d loss / d [a; b])."""
    x = torch.cat([torch.as_tensor(a), torch.as_tensor(b)]).to(torch.float64).requires_grad_(True)
    z = x / x.norm(dim=1, keepdim=True)
    n = a.shape[0]
    positive = [(i + n) % (2 * n) for i in range(2 * n)]
    value = losses(z, z, positive, list(range(2 * n)), loss, tau, hard_k).mean()
    value.backward()
    return value.item(), x.grad.numpy()


def paper_k(num_negatives):
    """docs/paper.md §2: K = 8% of the negatives (4095 of 50,000), rounded half away from zero, at least 1."""
    return min(max(1, math.floor(0.08 * num_negatives + 0.5)), num_negatives)


def bank_loss(anchors, bank, positives, loss, tau, hard_k=0):
    """tempered-analyze's `loss --anchors A --bank M --positives I`, the memory-bank form: L2-normalise the rows of
    anchors (n, d) and bank (N, d); anchor i's positive is bank row positives[i] and the other N - 1 rows are its
    negatives (none excluded); mean over the n anchors. The bank is a constant. hard_k = 0 takes paper_k of the N - 1
    negatives. Returns (loss, d loss / d anchors (n, d), K used)."""
    x = torch.as_tensor(anchors).to(torch.float64).clone().requires_grad_(True)
    z = x / x.norm(dim=1, keepdim=True)
    m = torch.as_tensor(bank).to(torch.float64)
    m = m / m.norm(dim=1, keepdim=True)
    positive = [int(j) for j in positives]
    k = hard_k if hard_k > 0 else paper_k(m.shape[0] - 1)
    value = losses(z, m, positive, [-1] * len(positive), loss, tau, k).mean()
    value.backward()
    return value.item(), x.grad.numpy(), k


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"wrote {len(write_golden(args.out_dir, args.seed))} golden entries to {args.out_dir}")


if __name__ == "__main__":
    main()
