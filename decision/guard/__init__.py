"""The sensitive-data guard: what is in a request, and hiding it on the way out.

``entities`` names what can be found and the class each type belongs to;
``detector`` finds spans in text; ``scan`` runs it over a whole request;
``vault`` swaps values for placeholders on the way out and back on the way in.
What may leave at all is ``localllm.decision.egress_policy``'s call.
"""
