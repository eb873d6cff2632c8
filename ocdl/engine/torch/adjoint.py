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
∂E/∂W = Σ_n ℓ'(z_n) y_n^[N]ᵀ, ∂E/∂μ = Σ_n ℓ'(z_n), p_n^[N] = Wᵀ ℓ'(z_n) (ℓ' ∈ R^K for K
classes); ∇R is added in closed form.

Per-layer controls (one (K, β) for every stage) share Kᵀ: J_lᵀ P_l = Kᵀ D_l with D_l the
pre-activation cotangent (:mod:`ocdl.fields`), so each P_i is one product Kᵀ G_i with
G_i = Σ_l coef_il D_l, and the stage values Y_i = y^[j] + h Σ_l a_il F_l need not be formed:
Σ_{l>i} w_l a_li D_l = w_i G_i (w = b for the partner form, 1 for the unscaled one) turns
∂E/∂K_j = h Σ_i w_i D_i Y_iᵀ into h D_w y^[j]ᵀ + h² Σ_i w_i G_i F_iᵀ with D_w = Σ_i w_i D_i, and
∂E/∂β_j = h D_w 1, p^[j] = p^[j+1] + h Kᵀ D_w.

Memory: the forward sweep keeps only the layer states y^[0..N] — O(N·m·d) — and the stage values
of layer j are recomputed from y^[j] during the backward sweep (those of the last layer are kept
from the forward sweep, where it runs here; O(s·m·d) extra at any time).
Storing the costates (``return_costates``) adds another O(N·m·d) (and O(N·s·m·d) for stages).
"""

from __future__ import annotations

import torch

from ocdl import loss as loss_mod, regulariser
from ocdl.engine.torch.network import TorchNetwork


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
        E = loss_mod.pointwise(kind, z, c, net.xp, net.K).sum() * scale + regulariser.value(prob, params)
        g = loss_mod.dpointwise(kind, z, c, net.xp, net.K) * scale  # ∂E/∂z_n
        two = net.K == 2
        p = params["W"][:, None] * g[None, :] if two else params["W"].T @ g  # p^[N] = Wᵀ ℓ'(z), d×m
        grads = {k: torch.zeros_like(params[k]) for k in keys}
        if "W" in grads:
            grads["W"] = yN @ g if two else g @ yN.T
            grads["mu"] = g.sum() if two else g.sum(1)
        # ∂E/∂K, ∂E/∂β accumulate in place (ocdl.fields): per stage, or one product per layer for per-layer controls
        gK, gb = grads["K"], grads["beta"]
        gh = [params["h"].new_zeros(())] * N
        if return_costates:
            p_all = [None] * (N + 1)
            p_all[N] = p
            P_all = [None] * N
        field = net.field
        terms, w = _backward_terms(net, form)
        cotangent, want_h = field.cotangent, "h" in grads
        # SigmaField (no K_extra): the cotangent is σ'(Z) ⊙ P, called directly
        dsigma_mul = field.dsigma_mul
        plan = _layer_plan(terms, w)
        K_extra, per_stage, is_net = field.has_K_extra, net.per_stage, not prob.has_skip
        KT = params["K"].transpose(-1, -2).contiguous().unbind(0)  # K_jᵀ (or K_{j,i}ᵀ), contiguous for the products
        gKs, gbs = gK.unbind(0), gb.unbind(0)  # per-layer views of the accumulators
        ones = net.xp.ones(Y0.shape[1], Y0)  # ∂E/∂β_j = h D_w 1
        for j in range(N - 1, -1, -1):
            y = states[j]
            if is_net:  # y⁺ = σ(K y + β): p = Kᵀ(σ' ⊙ p⁺)
                K, beta = u[j][0]
                _, Z, S = field(y, K, beta)
                p_in = p
                p, D = field.vjp_state(y, Z, S, K, p_in, KT[j])
                field.vjp_params_add(gK[j], gb[j], y, S, p_in, D, 1.0)
                if return_costates:
                    p_all[j] = p
                continue
            h = hs[j]
            Ys, Fs, Zs, Ss = last if j == N - 1 and last is not None else net.stages(u[j], y, h, want_Y=net.per_stage)
            Ps, Ds = [None] * s, [None] * s
            if per_stage:
                KTj = KT[j].unbind(0)
                for i in range(s - 1, -1, -1):
                    # P_i = c_i p^[j+1] + h Σ_l coef_il K_lᵀ D_l  (J_lᵀ P_l = K_lᵀ D_l), one fused product per term
                    c0, Pi = terms[i][0], None
                    for l, coef in terms[i][1]:
                        Pi = torch.addmm(p, KTj[l], Ds[l], beta=c0, alpha=h * coef) if Pi is None else \
                            torch.addmm(Pi, KTj[l], Ds[l], alpha=h * coef)
                    Ps[i] = Pi = _scaled(p, c0) if Pi is None else Pi
                    Ds[i] = cotangent(Zs[i], Ss[i], u[j][i][0], Pi)
                    if want_h:
                        gh[j] = gh[j] + w[i] * torch.vdot(Pi.flatten(), Fs[i].flatten())
                    # ∂E/∂u_{j,i} = h w_i (∂_u f(Y_i))ᵀ P_i
                    field.vjp_params_add(gK[j, i], gb[j, i], Ys[i], Ss[i], Pi, Ds[i], h * w[i])
                for i in range(s):  # p^[j] = p^[j+1] + h Σ_i w_i K_iᵀ D_i
                    p = torch.addmm(p, KTj[i], Ds[i], alpha=h * w[i])
            else:
                # One (K, β) for every stage: with G_i = Σ_l coef_il D_l, P_i = c_i p^[j+1] + h Kᵀ G_i,
                # and, as Y_i = y^[j] + h Σ_l a_il F_l and Σ_{l>i} w_l a_li D_l = w_i G_i,
                #   ∂E/∂K_j = h Σ_i w_i D_i Y_iᵀ = h D_w y^[j]ᵀ + h² Σ_i w_i G_i F_iᵀ,   D_w = Σ_i w_i D_i,
                #   ∂E/∂β_j = h D_w 1,   p^[j] = p^[j+1] + h Kᵀ D_w   (Y_i are never formed).
                K, KTj, gKj, hh = u[j][0][0], KT[j], gKs[j], h * h
                Dw = None  # Σ_i (w_i / w_s) D_i; the factor w_s goes into the products' α below
                for i, c0, l1, tm, g, wi, wg, wr in plan:
                    if l1 is not None:  # G_i = g D_l (a single term), the factor g carried in the products' α
                        G = Ds[l1]
                    elif tm:
                        G = Ds[tm[0][0]] * tm[0][1]
                        for l, coef in tm[1:]:
                            G = torch.add(G, Ds[l], alpha=coef)
                    else:
                        G = None
                    if G is None:
                        Pi = _scaled(p, c0)
                    elif c0 == 1.0:
                        Pi = torch.addmm(p, KTj, G, alpha=h * g)
                    else:
                        Pi = torch.addmm(p, KTj, G, beta=c0, alpha=h * g)
                    Ps[i] = Pi
                    Ds[i] = D = cotangent(Zs[i], Ss[i], K, Pi) if K_extra else dsigma_mul(Zs[i], Ss[i], Pi)
                    if G is not None:
                        gKj.addmm_(G, Fs[i].T, alpha=hh * wg)
                    if K_extra:
                        field.vjp_K_extra_(gKj, Ss[i], Pi, h * wi)
                    Dw = D if Dw is None else torch.add(Dw, D, alpha=wr)
                    if want_h:
                        gh[j] = gh[j] + wi * torch.vdot(Pi.flatten(), Fs[i].flatten())
                hw = h * w[-1]
                gKj.addmm_(Dw, y.T, alpha=hw)
                gbs[j].addmv_(Dw, ones, alpha=hw)
                p = torch.addmm(p, KTj, Dw, alpha=hw)
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
    if prob.has_skip:
        costates["P"] = torch.stack(P_all).transpose(-1, -2)
    return E, grads, costates


def _layer_plan(terms, w):
    """Per stage i = s, …, 1 (the order of the backward sweep), for the per-layer path:
    (i, c_i, l, terms, g, w_i, w_i g, w_i / w_s) where G_i = g D_l has a single term l (else l is
    None, g = 1 and G_i is formed from its terms, if any)."""
    plan = []
    for i in range(len(terms) - 1, -1, -1):
        c0, tm = terms[i]
        l1, g = tm[0] if len(tm) == 1 else (None, 1.0)
        plan.append((i, c0, l1, tm, g, w[i], w[i] * g, w[i] / w[-1]))
    return plan


def _scaled(x, c: float):
    """c x (x itself when c = 1)."""
    return x if c == 1.0 else x * c


def _backward_terms(net: TorchNetwork, form: str):
    """Per stage i, (c_i, [(l, coef_il)]) with P_i = c_i p^[j+1] + h Σ_l coef_il J_lᵀ P_l, and the
    stage weights w (floats) with μ_i = w_i P_i:
    partner: c_i = 1, coef_il = b_l − ã_il, w = b;  unscaled: c_i = b_i, coef_il = a_li, w = 1."""
    s = net.s
    if form == "partner":
        terms = [(1.0, [(l, net.partner_coef[i][l]) for l in range(i + 1, s) if net.partner_coef[i][l] != 0.0])
                 for i in range(s)]
        return terms, net.b
    terms = [(net.b[i], [(l, net.a[l][i]) for l in range(i + 1, s) if net.a[l][i] != 0.0]) for i in range(s)]
    return terms, [1.0] * s
