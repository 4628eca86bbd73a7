#!/usr/bin/env python3
"""Checks that template.yaml grants each function what its code really calls, and that the local
router serves the same routes as the deployed HTTP API.

Why: a function's IAM policy in template.yaml is written by hand, while the calls are made by the
Rust code. A call the policy forgets only shows up after a deploy, as an AccessDenied in
production. So the integration tests record every AWS call each function really makes (one JSON
line per IAM action, with a logical resource name) and this script compares that record with the
template. The list of calls is never kept by hand: it is what the code did during the tests.

    check-iam.py TEMPLATE CALLS_JSONL ROUTES_JSON
        CALLS_JSONL: lines like {"function": "balance", "action": "dynamodb:GetItem",
                     "resource": "LedgerTable"} (repeats are fine).
        ROUTES_JSON: a JSON array of [method, path, binary] triples (the local router's routes).
        Exit 0 when every call is allowed and the routes agree, 1 on a violation, 2 when the
        template uses something this checker does not understand.
    check-iam.py --self-test TEMPLATE
        Proves the check can fail: feeds it calls and routes that must be reported.

Only inline `- Statement:` policies with Effect Allow are understood. Each Resource expression is
mapped to the logical names the recorder writes: LedgerTable, LedgerTable/index/<name>,
DeploymentSecret, ProjectSecret, BillingEventBus (generally: <LogicalId> for `!GetAtt X.Arn`).
A recorded `unknown:<raw>` resource always fails: the recorder could not say what it was.
"""

import fnmatch
import json
import re
import sys

import yaml

# The per-project secrets' name prefix if Globals does not give PROJECT_SECRET_PREFIX.
DEFAULT_PROJECT_PREFIX = "coffer/${Stage}/projects"


class Unsupported(Exception):
    """The template uses a construct this checker cannot evaluate (exit 2, never a silent pass)."""


# ---- loading the template -------------------------------------------------------------------

class CfnLoader(yaml.SafeLoader):
    """A YAML loader that accepts CloudFormation's short tags: `!Ref X` -> {"Ref": X},
    `!GetAtt A.B` -> {"Fn::GetAtt": "A.B"}, `!Sub s` -> {"Fn::Sub": s}, and so on."""


def _construct_tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {"Ref": value} if suffix == "Ref" else {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=CfnLoader)


# ---- mapping Resource expressions to logical names ------------------------------------------

class ResourceMapper:
    """Turns one Resource expression of a policy into the logical name the recorder uses, or into
    "raw:<expression>" which never matches a recorded name."""

    def __init__(self, template):
        resources = template.get("Resources", {})
        # The deployment's Stripe secret is whatever the functions read it from (STRIPE_SECRET_ID:
        # `!If [CreateSecret, !Ref StripeSecret, !Ref ExistingSecretArn]` today), plus any secret
        # the stack creates itself. A Ref to one of those names is the deployment secret.
        self.deployment_refs = {lid for lid, r in resources.items() if r.get("Type") == "AWS::SecretsManager::Secret"}
        for res in resources.values():
            env = (res.get("Properties") or {}).get("Environment", {}).get("Variables", {})
            if "STRIPE_SECRET_ID" in env:
                self.deployment_refs |= set(_refs_in(env["STRIPE_SECRET_ID"]))
        # The project secrets: `arn:...:secret:<PROJECT_SECRET_PREFIX>/*`, prefix from Globals.
        prefix = template.get("Globals", {}).get("Function", {}).get("Environment", {}) \
            .get("Variables", {}).get("PROJECT_SECRET_PREFIX", {"Fn::Sub": DEFAULT_PROJECT_PREFIX})
        prefix = prefix.get("Fn::Sub", DEFAULT_PROJECT_PREFIX) if isinstance(prefix, dict) else prefix
        self.project_secret_suffix = f":secret:{prefix}/*"

    def map(self, expr):
        if expr == "*":
            return "*"  # IAM's "every resource"
        if isinstance(expr, dict) and len(expr) == 1:
            (fn, arg), = expr.items()
            if fn == "Fn::GetAtt":  # !GetAtt X.Arn (or the list form [X, Arn]) -> X
                parts = arg.split(".", 1) if isinstance(arg, str) else arg
                if len(parts) == 2 and parts[1] == "Arn":
                    return parts[0]
            if fn == "Ref" and arg in self.deployment_refs:
                return "DeploymentSecret"
            if fn == "Fn::If" and isinstance(arg, list) and len(arg) == 3:
                # Either branch may be deployed, so both must name the same thing.
                then, other = self.map(arg[1]), self.map(arg[2])
                if then == other:
                    return then
            if fn == "Fn::Sub" and isinstance(arg, str):
                if arg.endswith(self.project_secret_suffix):
                    return "ProjectSecret"
                m = re.fullmatch(r"\$\{(\w+)\.Arn\}(/index/.+)?", arg)
                if m:  # ${LedgerTable.Arn} or ${LedgerTable.Arn}/index/gsi1 (or /index/*)
                    return m.group(1) + (m.group(2) or "")
        return "raw:" + json.dumps(expr, sort_keys=True)


def _refs_in(expr):
    """Every `Ref` target inside an expression (e.g. both branches of an `!If`)."""
    if isinstance(expr, dict):
        for key, value in expr.items():
            if key == "Ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs_in(value)
    elif isinstance(expr, list):
        for item in expr:
            yield from _refs_in(item)


def _as_list(value):
    return value if isinstance(value, list) else [value]


# ---- reading the functions ------------------------------------------------------------------

def read_functions(template):
    """{binary: {"id": LogicalId, "allows": [(action pattern, resource pattern)], "routes": [...]}}"""
    mapper = ResourceMapper(template)
    functions = {}
    for lid, res in template.get("Resources", {}).items():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        props = res.get("Properties") or {}
        binary = ((res.get("Metadata") or {}).get("BuildProperties") or {}).get("Binary")
        if not binary:
            raise Unsupported(f"{lid} has no Metadata.BuildProperties.Binary")
        if binary in functions:
            raise Unsupported(f"{lid} and {functions[binary]['id']} both build Binary {binary}")
        if "Role" in props:
            raise Unsupported(f"{lid} uses its own Role; the checker only understands inline Policies statements")
        allows = []
        for policy in _as_list(props.get("Policies") or []):
            if not (isinstance(policy, dict) and list(policy) == ["Statement"]):
                raise Unsupported(
                    f"{lid} uses a SAM policy template or managed policy ({json.dumps(policy)}); "
                    "the checker only understands inline `- Statement:` blocks")
            for st in _as_list(policy["Statement"]):
                # A Deny, NotAction, NotResource or Condition could take away what an Allow gives:
                # refuse it rather than report a call as allowed when IAM would refuse it.
                if st.get("Effect") != "Allow" or set(st) - {"Sid", "Effect", "Action", "Resource"}:
                    raise Unsupported(f"{lid} has a statement the checker cannot evaluate: {json.dumps(st)}")
                for action in _as_list(st.get("Action", [])):
                    for resource in _as_list(st.get("Resource", [])):
                        allows.append((action.lower(), mapper.map(resource)))
        routes = []
        for event_id, ev in (props.get("Events") or {}).items():
            if ev.get("Type") == "HttpApi":
                route = ev.get("Properties") or {}
                if "Method" not in route or "Path" not in route:
                    raise Unsupported(f"{lid} event {event_id} is an HttpApi event without Method and Path")
                routes.append((route["Method"].upper(), route["Path"], binary))
        functions[binary] = {"id": lid, "allows": allows, "routes": routes}
    return functions


# ---- the check ------------------------------------------------------------------------------

def _matches(pattern, value):
    if pattern.startswith("raw:"):  # an unrecognised policy resource matches only itself
        return pattern == value
    return fnmatch.fnmatchcase(value, pattern)


def is_allowed(fn, action, resource):
    if resource.startswith("unknown:"):  # the recorder could not name it: never allowed
        return False
    return any(_matches(a, action.lower()) and _matches(r, resource) for a, r in fn["allows"])


def check(functions, calls, routes):
    """Returns (violations, summary lines). calls: dicts as recorded; routes: [method, path, binary]."""
    violations, summary = [], []
    distinct = sorted({(c["function"], c["action"], c["resource"]) for c in calls})
    for name in sorted({f for f, _, _ in distinct} - set(functions)):
        violations.append(f"  {name}: recorded calls, but no function in template.yaml has Binary {name}")
    for name, action, resource in distinct:
        if name in functions and not is_allowed(functions[name], action, resource):
            violations.append(f"  {name} ({functions[name]['id']}): {action} on {resource} "
                              "is not allowed by its policy in template.yaml")

    for name in sorted(functions):
        count = sum(1 for f, _, _ in distinct if f == name)
        if count:
            summary.append(f"  {name}: {count} distinct (action, resource) pairs recorded")
        else:
            summary.append(f"  WARNING: {name} ({functions[name]['id']}): no call recorded "
                           "(its policy is not checked by the tests)")

    local = {(m.upper(), p, b) for m, p, b in routes}
    deployed = {r for fn in functions.values() for r in fn["routes"]}
    for m, p, b in sorted(local - deployed):
        violations.append(f"  route {m} {p} -> {b}: in the local router but not in template.yaml")
    for m, p, b in sorted(deployed - local):
        violations.append(f"  route {m} {p} -> {b}: in template.yaml but not in the local router")
    return violations, summary


def read_calls(path):
    calls = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                call = json.loads(line)
            except ValueError:
                call = {}
            if not isinstance(call, dict) or not all(isinstance(call.get(k), str) for k in ("function", "action", "resource")):
                raise ValueError(f"{path}:{number}: not a {{function, action, resource}} line: {line.strip()}")
            calls.append(call)
    return calls


def main(template_path, calls_path, routes_path):
    functions = read_functions(load_template(template_path))
    calls = read_calls(calls_path)
    with open(routes_path, encoding="utf-8") as handle:
        routes = json.load(handle)
    violations, summary = check(functions, calls, routes)
    print(f"IAM check: {len(calls)} recorded lines, {len(functions)} functions, {len(routes)} local routes")
    print("\n".join(summary))
    if violations:
        print(f"\n{len(violations)} violation(s):")
        print("\n".join(violations))
        return 1
    print("every recorded call is allowed and the routes agree")
    return 0


def self_test(template_path):
    """Feeds the check what it must reject (and one call it must accept) and asserts the outcome."""
    functions = read_functions(load_template(template_path))
    routes = sorted({r for fn in functions.values() for r in fn["routes"]})
    allowed = {"function": "credit-packages", "action": "dynamodb:Query", "resource": "LedgerTable"}
    denied = {"function": "credit-packages", "action": "dynamodb:DeleteItem", "resource": "LedgerTable"}
    unknown = {"function": "credit-packages", "action": "dynamodb:Query", "resource": "unknown:arn:aws:s3:::x"}
    stranger = {"function": "no-such-binary", "action": "dynamodb:GetItem", "resource": "LedgerTable"}
    extra_route = ("GET", "/api/not-in-template", "credit-packages")
    dropped_route = routes[0]
    local = [r for r in routes if r != dropped_route] + [extra_route]

    violations, _ = check(functions, [allowed, allowed, denied, unknown, stranger], local)
    text = "\n".join(violations)
    cases = [
        ("a call the policy does not allow is reported", "credit-packages (CreditPackagesFunction): "
         "dynamodb:DeleteItem on LedgerTable is not allowed" in text),
        ("an unknown: resource is reported", "on unknown:arn:aws:s3:::x is not allowed" in text),
        ("a function missing from the template is reported", "no-such-binary: recorded calls" in text),
        ("a local route missing from the template is reported",
         "route GET /api/not-in-template -> credit-packages: in the local router but not in template.yaml" in text),
        ("a template route missing from the local router is reported",
         f"route {' '.join(dropped_route[:2])} -> {dropped_route[2]}: in template.yaml but not" in text),
        ("an allowed call is not reported", "dynamodb:Query on LedgerTable " not in text),
        ("exactly those 5 violations", len(violations) == 5),
        ("the template's own routes agree with themselves", check(functions, [allowed], routes)[0] == []),
    ]
    for name, ok in cases:
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    if not all(ok for _, ok in cases):
        print("violations reported:\n" + text)
        return 1
    print(f"self-test passed ({len(cases)} checks)")
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    try:
        if len(args) == 2 and args[0] == "--self-test":
            sys.exit(self_test(args[1]))
        if len(args) == 3:
            sys.exit(main(*args))
    except (Unsupported, ValueError, OSError) as error:
        print(f"check-iam: {error}", file=sys.stderr)
        sys.exit(2)
    print("usage: check-iam.py TEMPLATE CALLS_JSONL ROUTES_JSON | check-iam.py --self-test TEMPLATE",
          file=sys.stderr)
    sys.exit(2)
