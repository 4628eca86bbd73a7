#!/usr/bin/env python3
"""What a first `sam build && sam deploy` in a new AWS account needs from template.yaml and
samconfig.toml, checked (part of scripts/check-deploy.sh):

- no function reserves concurrency unless asked (a new account's quota may be too small for any
  reservation, and the deploy would roll back);
- a resource with a fixed name is deleted when the stack's first creation rolls back
  (`RetainExceptOnCreate`), so the next deploy does not fail on "already exists";
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


def self_test(template, samconfig):
    bad = yaml.load(yaml.dump(template), Loader=yaml.SafeLoader)
    bad["Resources"]["MeterUsageFunction"]["Properties"]["ReservedConcurrentExecutions"] = 1
    bad["Resources"]["StripeSecret"]["DeletionPolicy"] = "Retain"
    sam = {"default": {"deploy": {"parameters": {"confirm_changeset": True,
           "parameter_overrides": 'JwtIssuer="https://issuer.example.com/"'}},
           "build": {"parameters": {}}}}
    found = problems(bad, sam)
    assert len(found) == 5, found


def main():
    template = yaml.load(open("template.yaml", encoding="utf-8"), Loader=Loader)
    samconfig = tomllib.load(open("samconfig.toml", "rb"))
    self_test(template, samconfig)
    found = problems(template, samconfig)
    for p in found:
        print("deploy settings:", p)
    if found:
        return 1
    print("deploy settings: a first deploy needs no reservation, leaves no named resource behind, asks nothing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
