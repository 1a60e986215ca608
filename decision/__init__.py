"""Where a request goes, and why: every request, local or not, passes through here.

- ``guard``: what sensitive data a request holds, and the redaction vault;
- ``egress_policy``: what may reach an upstream of each trust level;
- ``router``: how hard a prompt is (the complexity router);
- ``planner``: router score, client preference, policy and upstream health -> a plan;
- ``cascade``: whether a local answer is weak enough to escalate;
- ``decide``: the one decision step (guard, cache, router, policy, budget) returning a
  typed ``Decision``, used by chat requests and by POST /v1/route alike;
- ``explanation``: a decision in words and numbers, for POST /v1/route.
"""
