"""The complexity router: how likely a prompt needs a stronger model than the local one.

``ComplexityRouter`` scores a prompt from its text (``features.prompt_features``) and
the sentence embedding the daemon already computed for the semantic cache, with a
small ONNX model trained by ``bench/train_router.py`` and shipped in ``assets/``.
``EscalationThreshold`` turns a user's setting (a fixed threshold, or a share of
requests to escalate) into the threshold the score is compared with.
"""
