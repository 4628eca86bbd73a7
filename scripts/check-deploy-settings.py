#!/usr/bin/env python3
"""What a first `sam build && sam deploy` in a new AWS account needs from template.yaml and
samconfig.toml, checked (part of scripts/check-deploy.sh):

- no function reserves concurrency unless asked (a new account's quota may be too small for any
  reservation, and the deploy would roll back);
- a resource with a fixed name is deleted when the stack's first creation rolls back
  (`RetainExceptOnCreate`), so the next deploy does not fail on "already exists";
- every way a job, a stream or a queue can fail reaches a person: each alarm notifies the
  alarm topic; each queue (failure destinations, dead letters) has an alarm; each scheduled or
  stream-fed function has an errors alarm, and each stream-fed one an iterator-age alarm;
- the timeouts fit: every function behind the HTTP API answers within API Gateway's 30 s, and
  one that calls Stripe (it reads a Stripe secret) has time for a whole Stripe call (its
  retries included, `STRIPE_CALL_BUDGET`) plus a DynamoDB operation (the SDK's operation
  timeout), read from the Rust source;
- samconfig.toml asks nothing (SAM's beta feature for Rust builds opted into, no changeset
  prompt), and its placeholder issuer is refused by the template's pattern, with a message.
"""
import re
import sys
import tomllib

import yaml


class Loader(yaml.SafeLoader):
    pass


def any_tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        return {suffix: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {suffix: loader.construct_sequence(node, deep=True)}
    return {suffix: loader.construct_mapping(node, deep=True)}


Loader.add_multi_constructor("!", any_tag)


def problems(template, samconfig):
    found = []
    resources = template.get("Resources", {})
    for name, resource in resources.items():
        props = resource.get("Properties") or {}
        reserved = props.get("ReservedConcurrentExecutions")
        if reserved is not None and not (isinstance(reserved, dict) and "If" in reserved):
            found.append(f"{name} reserves concurrency unconditionally ({reserved})")
        fixed_name = isinstance(props.get("Name"), (str, dict)) and resource.get(
            "Type", ""
        ) == "AWS::SecretsManager::Secret"
        if fixed_name and resource.get("DeletionPolicy") != "RetainExceptOnCreate":
            found.append(f"{name} has a fixed name but is kept when its creation rolls back")
    found += alarm_problems(resources)
    found += timeout_problems(template, budgets())
    issuer = template["Parameters"]["JwtIssuer"]
    pattern = issuer.get("AllowedPattern")
    if not pattern or not issuer.get("ConstraintDescription"):
        found.append("JwtIssuer has no pattern or no message for a wrong value")
    else:
        if not re.fullmatch(pattern, "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Ab12"):
            found.append("JwtIssuer's pattern refuses a real issuer URL")
    for env, settings in samconfig.items():
        if not isinstance(settings, dict):
            continue
        deploy = settings.get("deploy", {}).get("parameters", {})
        if deploy.get("confirm_changeset", False):
            found.append(f"samconfig [{env}] asks to confirm the changeset")
        overrides = deploy.get("parameter_overrides", "")
        match = re.search(r'JwtIssuer="([^"]*)"', overrides)
        if match and pattern and re.fullmatch(pattern, match.group(1)):
            if "example" in match.group(1) or "REPLACE" in match.group(1):
                found.append(f"samconfig [{env}]'s placeholder issuer passes the pattern")
    build = samconfig.get("default", {}).get("build", {}).get("parameters", {})
    if build.get("beta_features") is not True:
        found.append("samconfig does not opt into SAM's beta feature for Rust builds")
    return found


# API Gateway's HTTP API integration timeout: 30 s, and it cannot be raised.
API_GATEWAY_LIMIT = 30


def budgets():
    """The Stripe call budget and the SDK operation timeout, in seconds, as the code sets them."""
    stripe = open("shared/src/adapters/stripe/mod.rs", encoding="utf-8").read()
    app = open("shared/src/app/mod.rs", encoding="utf-8").read()
    call = re.search(r"STRIPE_CALL_BUDGET: Duration = Duration::from_secs\((\d+)\)", stripe)
    operation = re.search(r"\.operation_timeout\(Duration::from_millis\(([\d_]+)\)\)", app)
    if not call or not operation:
        raise SystemExit("deploy settings: the Stripe budget or the SDK timeout was not found in the source")
    return int(call.group(1)), int(operation.group(1).replace("_", "")) / 1000


def timeout_problems(template, budget):
    stripe_call, sdk_operation = budget
    found = []
    default = template.get("Globals", {}).get("Function", {}).get("Timeout", 3)
    for name, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.get("Properties") or {}
        events = (props.get("Events") or {}).values()
        if not any(e.get("Type") == "HttpApi" for e in events):
            continue
        timeout = props.get("Timeout", default)
        calls_stripe = "secretsmanager:GetSecretValue" in json_text(props.get("Policies"))
        if timeout >= API_GATEWAY_LIMIT:
            found.append(f"{name} runs up to {timeout} s, past API Gateway's {API_GATEWAY_LIMIT} s")
        if calls_stripe and timeout < stripe_call + sdk_operation:
            found.append(
                f"{name} calls Stripe but its {timeout} s do not fit a Stripe call "
                f"({stripe_call} s) and a DynamoDB operation ({sdk_operation} s)"
            )
        if timeout < sdk_operation:
            found.append(f"{name}'s {timeout} s do not fit one DynamoDB operation")
    return found


def json_text(value):
    import json
    return json.dumps(value, default=str)


def refs(value):
    """Every logical id a `!Ref`/`!GetAtt` inside `value` names."""
    if isinstance(value, dict):
        out = set()
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                out.add(inner)
            elif key == "GetAtt":
                out.add((inner.split(".")[0] if isinstance(inner, str) else inner[0]))
            else:
                out |= refs(inner)
        return out
    if isinstance(value, list):
        return set().union(*(refs(v) for v in value)) if value else set()
    return set()


def alarm_problems(resources):
    found = []
    alarms = {n: r for n, r in resources.items() if r.get("Type") == "AWS::CloudWatch::Alarm"}
    watched = {}  # (metric, resource) -> alarm names
    for name, alarm in alarms.items():
        props = alarm.get("Properties", {})
        if "AlarmTopic" not in refs(props.get("AlarmActions", [])):
            found.append(f"{name} notifies nobody (no AlarmTopic in AlarmActions)")
        metric = props.get("MetricName")
        for dim in props.get("Dimensions", []):
            for target in refs(dim.get("Value")):
                watched.setdefault((metric, target), []).append(name)
    for name, resource in resources.items():
        kind = resource.get("Type")
        if kind == "AWS::SQS::Queue" and ("ApproximateNumberOfMessagesVisible", name) not in watched:
            found.append(f"the queue {name} has no alarm")
        if kind != "AWS::Serverless::Function":
            continue
        events = (resource.get("Properties") or {}).get("Events") or {}
        kinds = {e.get("Type") for e in events.values()}
        if kinds & {"ScheduleV2", "Schedule", "DynamoDB"} and ("Errors", name) not in watched:
            found.append(f"{name} runs with no caller to see its failures, and has no errors alarm")
        if "DynamoDB" in kinds and ("IteratorAge", name) not in watched:
            found.append(f"{name} reads the stream and has no iterator-age alarm")
    return found


def self_test(template, samconfig):
    bad = yaml.load(yaml.dump(template), Loader=yaml.SafeLoader)
    bad["Resources"]["MeterUsageFunction"]["Properties"]["ReservedConcurrentExecutions"] = 1
    bad["Resources"]["StripeSecret"]["DeletionPolicy"] = "Retain"
    sam = {"default": {"deploy": {"parameters": {"confirm_changeset": True,
           "parameter_overrides": 'JwtIssuer="https://issuer.example.com/"'}},
           "build": {"parameters": {}}}}
    del bad["Resources"]["StatsIteratorAgeAlarm"]
    del bad["Resources"]["ReconcileErrorsAlarm"]
    bad["Resources"]["StatsFailuresAlarm"]["Properties"]["AlarmActions"] = []
    bad["Resources"]["BillingFunction"]["Properties"]["Timeout"] = 10
    bad["Resources"]["BalanceFunction"]["Properties"]["Timeout"] = 40
    found = problems(bad, sam)
    assert len(found) == 10, found


def main():
    template = yaml.load(open("template.yaml", encoding="utf-8"), Loader=Loader)
    samconfig = tomllib.load(open("samconfig.toml", "rb"))
    self_test(template, samconfig)
    found = problems(template, samconfig)
    for p in found:
        print("deploy settings:", p)
    if found:
        return 1
    print("deploy settings: a first deploy needs no reservation, leaves no named resource behind, asks nothing; every failure path alarms; the timeouts fit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
