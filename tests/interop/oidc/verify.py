"""Verifies Switchyard's identified deliveries with PyJWT, as a subscriber would.

Usage: verify.py ISSUER AUDIENCE TOKENS.json, a file of [token, ...]. The key set is found the
standard way: ISSUER's /.well-known/openid-configuration names its jwks_uri, and PyJWT's
PyJWKClient picks each token's key by its `kid`. Every token must verify (signature, `iss`,
`aud`, `exp`, `nbf`, `iat`) and must be refused for another audience. Prints the claims of
each token as one JSON line; exits non-zero, saying which, on the first failure.
"""

import json
import sys
import urllib.request

import jwt


def main(issuer, audience, path):
    with urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration") as answer:
        discovery = json.load(answer)
    if discovery["issuer"] != issuer:
        sys.exit(f"the discovery document names issuer {discovery['issuer']!r}, not {issuer!r}")
    keys = jwt.PyJWKClient(discovery["jwks_uri"], cache_keys=False)
    algorithms = discovery["id_token_signing_alg_values_supported"]
    with open(path) as file:
        tokens = json.load(file)
    for number, token in enumerate(tokens):
        key = keys.get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            key.key,
            algorithms=algorithms,
            audience=audience,
            issuer=issuer,
            options={"require": ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"]},
        )
        try:
            jwt.decode(token, key.key, algorithms=algorithms, audience=audience + "-other", issuer=issuer)
        except jwt.InvalidAudienceError:
            pass
        else:
            sys.exit(f"token {number}: verified for another audience too")
        print(json.dumps(claims, sort_keys=True))


if __name__ == "__main__":
    main(*sys.argv[1:])
