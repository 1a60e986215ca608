"""The sensitive-data guard: what is in a request, and what may leave the device.

``entities`` names what can be found and the class each type belongs to;
``detector`` finds spans in text; ``scan`` runs it over a whole request;
``policy`` decides allow / redact / block per upstream trust level;
``vault`` swaps values for placeholders on the way out and back on the way in.
"""
