"""The hand-written discrete adjoint: the costate sweep with the symplectic partner method.

Backward through layer j, from p^[j+1] (with p^[N] = ∂E_loss/∂y^[N]), with J_l = ∂_y f(Y_l, u_{j,l}):

  partner form (every b_i ≠ 0; Ã the partner of A, ã_il = b_l − b_l a_li / b_i):
      P_i     = p^[j+1] + h Σ_l (b_l − ã_il) J_lᵀ P_l        (explicit A: only l > i, so i = s…1)
      p^[j]   = p^[j+1] + h Σ_i b_i J_iᵀ P_i
  i.e. one step of (Ã, b) backwards in time for p' = −J(t)ᵀ p, evaluated on the forward stages.

  unscaled form (any b, e.g. midpoint b = (0, 1)); μ_i = b_i P_i where the partner exists:
      μ_i     = b_i p^[j+1] + h Σ_l a_li J_lᵀ μ_l
      p^[j]   = p^[j+1] + h Σ_i J_iᵀ μ_i

Gradients (μ_i = b_i P_i):  ∂E/∂u_{j,i} = h_j (∂_u f(Y_i, u_{j,i}))ᵀ μ_i  (summed over i for
per-layer controls),  ∂E/∂h_j = Σ_i ⟨μ_i, F_i⟩ = Σ_i b_i ⟨P_i, F_i⟩, and for the classifier
∂E/∂W = Σ_n ℓ'(z_n) y_n^[N], ∂E/∂μ = Σ_n ℓ'(z_n); ∇R is added in closed form.

Memory: the forward sweep keeps only the layer states y^[0..N] — O(N·m·d) — and the stage values
of layer j are recomputed from y^[j] during the backward sweep (those of the last layer are kept
from the forward sweep, where it runs here; O(s·m·d) extra at any time).
Storing the costates (``return_costates``) adds another O(N·m·d) (and O(N·s·m·d) for stages).
"""

from __future__ import annotations

import torch

from ocdl import loss as loss_mod, regulariser
from ocdl.torch_backend.network import TorchNetwork


def grad_adjoint(net: TorchNetwork, params, Y0, c, return_costates: bool = False, form: str = "auto", states=None):
    """(E, ∇E over the trained keys[, costates]) by the hand-written backward sweep.

    ``form``: 'partner' (needs every b_i ≠ 0), 'unscaled', or 'auto' (partner where it exists).
    ``costates`` (if asked) is a dict with ``p`` (N+1, m, d) and ``P`` (N, s, m, d), the stage
    costates P_i (μ_i / b_i; for the unscaled form the unscaled μ_i), one row per sample.
    ``states``: the layer states y^[0..N] of a forward sweep at these params, if already at hand."""
    prob = net.problem
    if form == "auto":
        form = "partner" if net.partner_coef is not None else "unscaled"
    if form == "partner" and net.partner_coef is None:
        from ocdl.errors import OcdlError

        raise OcdlError(f"tableau {net.tableau.name!r} has some b_i = 0: the partner form does not exist")
    keys = prob.trainable()
    N, s = prob.N, net.s
    # inference mode, not only no_grad: no version counters or view tracking for the many small
    # in-place updates and views of the sweep (≈ 10 % of its time at m = 1000); the returned tensors
    # are inference tensors (usable in any out-of-place computation)
    with torch.inference_mode():
        u = net.controls(params)
        hs = params["h"].tolist()
        last = None  # the stages of layer N−1, kept from the forward sweep (O(s·m·d))
        if states is None:
            states, last = net.sweep(params, Y0)
        yN = states[-1]
        z = net.logits(params, yN)
        kind = prob.objective.loss
        scale = 1.0 / Y0.shape[1] if prob.objective.mean else 1.0
        E = loss_mod.pointwise(kind, z, c, net.xp).sum() * scale + regulariser.value(prob, params)
        g = loss_mod.dpointwise(kind, z, c, net.xp) * scale  # ∂E/∂z_n
        p = params["W"][:, None] * g[None, :]  # p^[N] = Wᵀ ℓ'(z), d×m
        grads = {k: torch.zeros_like(params[k]) for k in keys}
        if "W" in grads:
            grads["W"] = yN @ g
            grads["mu"] = g.sum()
        # ∂E/∂K, ∂E/∂β accumulate in place (ocdl.fields): per stage, or one product per layer for per-layer controls
        gK, gb = grads["K"], grads["beta"]
        gh = [params["h"].new_zeros(())] * N
        if return_costates:
            p_all = [None] * (N + 1)
            p_all[N] = p
            P_all = [None] * N
        field = net.field
        weights = net.b if form == "partner" else [1.0] * s  # μ_i = w_i P_i
        for j in range(N - 1, -1, -1):
            y = states[j]
            if prob.family == "net":  # y⁺ = σ(K y + β): p = Kᵀ(σ' ⊙ p⁺)
                K, beta = u[j][0]
                _, Z, S = field(y, K, beta)
                p_in = p
                p, D = field.vjp_state(y, Z, S, K, p_in)
                field.vjp_params_add(gK[j], gb[j], y, S, p_in, D, 1.0)
                if return_costates:
                    p_all[j] = p
                continue
            h = hs[j]
            Ys, Fs, Zs, Ss = last if j == N - 1 and last is not None else net.stages(u[j], y, h)
            KTs = [K.T for K, _ in u[j]] if net.per_stage else [u[j][0][0].T] * s
            JT = [None] * s  # J_lᵀ P_l (partner) or J_lᵀ μ_l (unscaled)
            Ps, Ds = [None] * s, [None] * s
            p_next = p
            for i in range(s - 1, -1, -1):
                if form == "partner":
                    Pi = p
                    for l in range(i + 1, s):
                        coef = net.partner_coef[i][l]
                        if coef != 0.0:
                            Pi = torch.add(Pi, JT[l], alpha=h * coef)
                else:
                    Pi = net.b[i] * p
                    for l in range(i + 1, s):
                        if net.a[l][i] != 0.0:
                            Pi = torch.add(Pi, JT[l], alpha=h * net.a[l][i])
                K = u[j][i][0]
                if i == 0 and not net.per_stage:
                    # J_0ᵀ P_0 enters only p^[j] = p^[j+1] + h Kᵀ Σ_i w_i D_i, formed once below
                    Ds[i] = field.cotangent(Zs[i], Ss[i], K, Pi)
                else:
                    JT[i], Ds[i] = field.vjp_state(Ys[i], Zs[i], Ss[i], K, Pi, KTs[i])
                Ps[i] = Pi
                if "h" in grads:
                    gh[j] = gh[j] + weights[i] * torch.vdot(Pi.flatten(), Fs[i].flatten())
                if net.per_stage:  # ∂E/∂u_{j,i} = h w_i (∂_u f(Y_i))ᵀ P_i
                    field.vjp_params_add(gK[j, i], gb[j, i], Ys[i], Ss[i], Pi, Ds[i], h * weights[i])
                    p_next = torch.add(p_next, JT[i], alpha=h * weights[i])
            if net.per_stage:
                p = p_next
            else:  # ∂E/∂u_j = h Σ_i w_i (∂_u f(Y_i))ᵀ P_i and p^[j] in one product each
                Gw = field.vjp_params_layer(gK[j], gb[j], Ys, Ss, Ps, Ds, weights, h)
                p = torch.addmm(p, KTs[0], Gw, alpha=h)
            if return_costates:
                p_all[j] = p
                P_all[j] = torch.stack(Ps)
        if "h" in grads:
            grads["h"] = torch.stack(gh)
        for k, v in regulariser.gradient(prob, params).items():
            grads[k] = grads[k] + v
    if not return_costates:
        return E, grads
    costates = {"p": torch.stack(p_all).transpose(-1, -2)}
    if prob.family != "net":
        costates["P"] = torch.stack(P_all).transpose(-1, -2)
    return E, grads, costates
