"""Filters of the huiyan_node role: read TOML, and complete the roster with the PeerIds the role
fetched from the nodes.

The roster is edited as text, table by table, so that its comments and layout survive: only the
`peer_id` line of each `[[site]]` table is added or checked. Runs on the controller
(Python >= 3.11 for `tomllib`, which ansible-core 2.19 requires anyway).
"""

import os
import re
import tomllib

from ansible.errors import AnsibleFilterError

_TABLE = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\"-]+)\s*\]\]?\s*(#.*)?$")
_ID = re.compile(r"^\s*id\s*=\s*\"([^\"]*)\"")
_PEER = re.compile(r"^\s*peer_id\s*=\s*\"([^\"]*)\"")
_PEER_ID_FORM = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{40,60}$")


def from_toml(text, source="TOML text"):
    """Parses TOML text into a dict; a syntax error names the source and the position."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise AnsibleFilterError(f"{source} is not valid TOML: {err}") from err


def huiyan_roster_with_peer_ids(text, peer_ids, source="roster.toml"):
    """Returns the roster text with `peer_id = "..."` set in the `[[site]]` table of every site
    named in `peer_ids` (site id -> PeerId).

    A site whose table already has a different `peer_id` is an error: either the roster is stale
    or the node's key changed; the operator decides which (docs/operations.md, "Rotate a node
    key"). A site in `peer_ids` that the roster does not list is an error too.
    """
    from_toml(text, source)
    for site, peer in peer_ids.items():
        if not _PEER_ID_FORM.match(str(peer)):
            raise AnsibleFilterError(
                f"the PeerId recorded for site `{site}` is not a PeerId: {peer!r}")

    lines = text.splitlines(keepends=True)
    out = []
    seen = set()
    # Each [[site]] table is buffered until the next table header, then emitted with its peer_id.
    table, in_site = [], False

    def flush():
        if not in_site:
            out.extend(table)
            return
        site = next((m.group(1) for m in map(_ID.match, table) if m), None)
        if site is None or site not in peer_ids:
            out.extend(table)
            return
        seen.add(site)
        want = peer_ids[site]
        have = [i for i, line in enumerate(table) if _PEER.match(line)]
        if have:
            current = _PEER.match(table[have[0]]).group(1)
            if current != want:
                raise AnsibleFilterError(
                    f"{source}: site `{site}` has peer_id {current} but the key on its node has "
                    f"PeerId {want}. If the key was rotated on purpose, delete the old peer_id "
                    "line from the roster and run the playbook again; otherwise restore the "
                    "node's key from its backup.")
            out.extend(table)
            return
        at = next(i for i, line in enumerate(table) if _ID.match(line))
        table.insert(at + 1, f'peer_id = "{want}"\n')
        out.extend(table)

    for line in lines:
        header = _TABLE.match(line)
        if header:
            flush()
            table, in_site = [], header.group(1) == "site" and line.strip().startswith("[[")
        table.append(line)
    flush()

    missing = sorted(set(peer_ids) - seen)
    if missing:
        raise AnsibleFilterError(
            f"{source} has no [[site]] table for {', '.join(missing)}: add one per site "
            "(docs/operations.md, \"Add a site\").")
    result = "".join(out)
    from_toml(result, source)
    return result


def huiyan_peer_ids_from_dir(path):
    """Reads `<site>.peer_id` files (one PeerId each) from a controller directory into a dict."""
    found = {}
    if not os.path.isdir(path):
        return found
    for name in sorted(os.listdir(path)):
        if name.endswith(".peer_id"):
            with open(os.path.join(path, name), encoding="utf-8") as f:
                found[name[: -len(".peer_id")]] = f.read().strip()
    return found


class FilterModule:
    """huiyan_node filters."""

    def filters(self):
        return {
            "huiyan_from_toml": from_toml,
            "huiyan_peer_ids_from_dir": huiyan_peer_ids_from_dir,
            "huiyan_roster_with_peer_ids": huiyan_roster_with_peer_ids,
        }
