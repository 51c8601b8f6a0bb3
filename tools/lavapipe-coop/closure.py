"""Prints the pool paths of the Debian packages that the named packages need (themselves and
their Depends / Pre-Depends, recursively, first alternative of each), from a Packages index.

    python3 closure.py Packages mesa-vulkan-drivers libvulkan1

Packages that only matter to an installed system (dpkg, debconf, the base-files family) are
left out: the packages are unpacked, never installed (tools/lavapipe-coop/setup.sh).
"""
import sys

NOT_NEEDED = {
    "debconf", "dpkg", "install-info", "libc-bin", "perl-base", "readline-common",
    "sensible-utils", "usr-is-merged",
}


def read_index(path):
    """Package name -> its fields, the first stanza of each name; virtual name -> provider."""
    packages, provides, fields = {}, {}, {}
    for line in open(path, encoding="utf-8", errors="replace"):
        if line == "\n":
            if "Package" in fields:
                packages.setdefault(fields["Package"], fields)
            fields = {}
        elif not line[0].isspace():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    for name, fields in packages.items():
        for virtual in fields.get("Provides", "").split(","):
            virtual = virtual.strip().split(" ")[0]
            if virtual:
                provides.setdefault(virtual, name)
    return packages, provides


def dependencies(fields):
    """The first alternative of every Depends and Pre-Depends entry, without versions."""
    for key in ("Depends", "Pre-Depends"):
        for entry in fields.get(key, "").split(","):
            name = entry.split("|")[0].strip().split(" ")[0].split(":")[0]
            if name:
                yield name


def main(index, wanted):
    packages, provides = read_index(index)
    seen, todo = set(), list(wanted)
    while todo:
        name = todo.pop()
        if name in NOT_NEEDED:
            continue
        name = name if name in packages else provides.get(name)
        if name is None or name in seen:
            continue
        seen.add(name)
        todo.extend(dependencies(packages[name]))
    missing = [name for name in wanted if name not in seen]
    if missing:
        sys.exit(f"not in {index}: {missing}")
    for name in sorted(seen):
        print(packages[name]["Filename"])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
