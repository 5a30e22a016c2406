"""The unit tests catch every slip planted by gradcheck/planted.py.

A test that cannot fail proves nothing. For each bug in :data:`gradcheck.planted.BUGS`
(one method of the reference rewritten with a learner's slip) this runs the unit tests
of the reference that should catch it: each passes as the code is, fails with an
AssertionError while the bug is planted, and passes again once it is removed. The
tests are the real ones from the other files, called with their parameters, not
checks written for the planted code.
"""
import numpy as np
import pytest

import test_layers
import test_losses
import test_model
import test_module
import test_optim
import test_sampler
from gradcheck import CASES, run
from gradcheck.planted import BUGS
from npvae import Sampler
from npvae.sampler import split_h


def _call(test, *args):
    run = lambda: test(*args)                                  # noqa: E731
    run.__name__ = test.__name__ + (f"{list(args)}" if args else "")
    return run


SQUARE_VAE = (8, (8,), 4)          # square 8x8 Dense layers in the encoder and the decoder
DEEP_VAE = (12, (7, 5), 3)

#: bug name -> the unit tests that must catch it
CATCHERS = {
    "dense_transposed_dW": [
        _call(test_layers.test_square_dense_backward_by_hand),
        _call(test_layers.test_dense_gradients_match_finite_differences, 4, 4),
        _call(test_layers.test_sequential_gradients_match_finite_differences),
        _call(test_model.test_whole_model_gradients_match_finite_differences, *SQUARE_VAE, 1.0),
    ],
    "dense_assigns_grads": [
        _call(test_module.test_backward_accumulates_and_zero_grad_resets),
        _call(test_module.test_vae_backward_twice_is_twice),
    ],
    "kl_dmu_dropped": [
        _call(test_losses.test_kl_by_hand, np.float64),
        _call(test_losses.test_kl_gradient_matches_finite_differences, 1.0),
        _call(test_model.test_the_kl_road_into_mu_and_logvar, 1.0),
        _call(test_model.test_whole_model_gradients_match_finite_differences, *DEEP_VAE, 1.0),
    ],
    "sampler_noise_times_variance": [
        _call(test_sampler.test_draws_have_mean_mu_and_variance_exp_logvar, np.float64),
        _call(test_sampler.test_fixed_eps_value_and_gradient_by_hand),
        _call(test_sampler.test_gradient_matches_finite_differences),
        _call(test_model.test_whole_model_gradients_match_finite_differences, *DEEP_VAE, 0.0),
    ],
    "bce_logits_clamped": [
        _call(test_losses.test_bce_with_logits_saturated, np.float64, None),
    ],
    "bce_missing_1_over_B": [
        _call(test_losses.test_bce_with_logits_by_hand, np.float64),
        _call(test_losses.test_bce_with_logits_gradient_matches_finite_differences, 1.0),
        _call(test_losses.test_gradients_carry_one_over_b, "BCEWithLogits"),
        _call(test_model.test_whole_model_gradients_match_finite_differences, *DEEP_VAE, 0.0),
    ],
    "kl_doubled_1_over_B": [
        _call(test_losses.test_kl_by_hand, np.float64),
        _call(test_losses.test_kl_gradient_matches_finite_differences, -1.7),
        _call(test_losses.test_gradients_carry_one_over_b, "KL"),
        _call(test_model.test_the_kl_road_into_mu_and_logvar, 2.5),
        _call(test_model.test_whole_model_gradients_match_finite_differences, *SQUARE_VAE, 0.5),
    ],
    "relu_writes_grad_out": [
        _call(test_layers.test_relu_by_hand, np.float64),
        _call(test_layers.test_relu_gradient_matches_finite_differences),
        _call(test_module.test_backward_leaves_grad_out_alone_and_returns_a_new_array, "ReLU"),
    ],
    "adam_bias_correction_off_by_one": [
        _call(test_optim.test_adam_steps_by_hand),
        _call(test_optim.test_adam_constant_gradient_moves_lr_every_step),
        _call(test_optim.test_adam_follows_the_update_rule, np.float64, 0.0),
    ],
    "adam_betas_swapped": [
        _call(test_optim.test_adam_steps_by_hand),
        _call(test_optim.test_adam_follows_the_update_rule, np.float64, 0.0),
    ],
    "adam_weight_decay_ignored": [
        _call(test_optim.test_adam_weight_decay_is_l2_added_to_the_gradient),
        _call(test_optim.test_adam_follows_the_update_rule, np.float64, 0.05),
    ],
    "adam_eps_inside_sqrt": [
        _call(test_optim.test_adam_steps_by_hand),
        _call(test_optim.test_adam_constant_gradient_moves_lr_every_step),
    ],
    "sgd_weight_decay_after_momentum": [
        _call(test_optim.test_sgd_follows_the_update_rule, np.float64, 0.9, 0.01),
    ],
    "sigmoid_derivative_at_logit": [
        _call(test_layers.test_sigmoid_known_values),
        _call(test_layers.test_sigmoid_gradient_matches_finite_differences),
        _call(test_layers.test_sequential_gradients_match_finite_differences),
    ],
}

PAIRS = [(bug, check) for bug, checks in CATCHERS.items() for check in checks]


def test_every_planted_bug_has_unit_tests_that_must_catch_it():
    assert set(CATCHERS) == set(BUGS)
    assert all(CATCHERS.values())


@pytest.mark.parametrize("bug, check", PAIRS, ids=[f"{bug}-{check.__name__}" for bug, check in PAIRS])
def test_the_unit_test_fails_with_the_bug_planted(bug, check):
    check()                                     # passes on the code as it is
    with BUGS[bug][1]():
        with pytest.raises(AssertionError):
            check()
    check()                                     # and again once the bug is removed


def test_each_planted_bug_has_its_own_description_naming_the_method_it_replaces():
    """--list and --self-test print these: two alike, or one naming another method, point a
    reader at the wrong slip."""
    import npvae
    descriptions = [what for what, _ in BUGS.values()]
    assert len(set(descriptions)) == len(descriptions)
    for name, (what, plant) in BUGS.items():
        cls_name, method = what.split(":")[0].split(".")
        cls = getattr(npvae, cls_name)
        original = getattr(cls, method)
        with plant():
            assert getattr(cls, method) is not original, name
        assert getattr(cls, method) is original


def _forward_at_the_variance(self, h, eps=None):
    mu, logvar = split_h(h, "Sampler.forward")
    eps = self.rng.standard_normal(mu.shape, dtype=h.dtype) if eps is None else eps.copy()
    var = np.exp(logvar)
    self.keep(eps=eps, var=var)
    return mu + var * eps                   # the slip: the variance for the standard deviation


def _backward_at_the_variance(self, grad_out):
    eps, var = self.saved("eps", "var")
    return np.concatenate([grad_out, grad_out * eps * var], axis=1)     # dz/dlogvar of that z


def test_the_variance_slip_made_in_both_passes_passes_gradcheck_and_fails_the_moment_test(monkeypatch):
    """The planted slip is in forward alone, so gradcheck sees a backward that disagrees with it.
    Made in both passes it is consistent, and no gradient check can see it; the test of the
    draws' moments does (what the slip's description says)."""
    assert "gradcheck cannot see it" in BUGS["sampler_noise_times_variance"][0]
    monkeypatch.setattr(Sampler, "forward", _forward_at_the_variance)
    monkeypatch.setattr(Sampler, "backward", _backward_at_the_variance)
    rows = run(CASES, ops=["sampler", "vae_1h", "vae_2h", "vae_square"], backends=("numpy",))
    assert rows and all(r.passed for r in rows), [r for r in rows if not r.passed]
    test_sampler.test_gradient_matches_finite_differences()
    with pytest.raises(AssertionError, match="variance off by"):
        test_sampler.test_draws_have_mean_mu_and_variance_exp_logvar(np.float64)
