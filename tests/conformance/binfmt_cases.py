"""The 27 cases of Linux's ``tools/testing/selftests/exec/binfmt_script.py``, as data, and their files.

Source: torvalds/linux tools/testing/selftests/exec/binfmt_script.py @ 14e77332e74603efab8347c89d3cda447c3b97c9.
Each case is a ``#!`` line of ``size`` bytes (not counting the newline): the hashbang, ``leading``
bytes, an interpreter path ``root`` + filler + ``target`` (the filler split into NAME_MAX-long
directory names), then ``arg``; ``good`` says whether the kernel must run it.  The interpreter
is created (when ``target`` is not empty) under the working directory the script runs in.
"""

from __future__ import annotations

from dataclasses import dataclass

SIZE = 256  # BINPRM_BUF_SIZE
NAME_MAX = 255  # ext4, overlayfs, tmpfs


@dataclass(frozen=True)
class Case:
    name: str
    size: int
    good: bool = True
    leading: str = ""
    root: str = "./"
    target: str = "/perl"
    fill: str = "A"
    arg: str = ""
    newline: str = "\n"

    def parts(self) -> tuple[str, str]:
        """(the script's bytes as text, the interpreter path it names or "" when none is created)."""
        remaining = self.size - 2 - len(self.leading) - len(self.root) - len(self.target) - len(self.arg)
        middle = ""
        while remaining >= NAME_MAX:
            middle += self.fill * (NAME_MAX - 1) + "/"
            remaining -= NAME_MAX
        middle += self.fill * remaining
        interpreter = self.root + middle + self.target
        text = "#!" + self.leading + interpreter + self.arg + self.newline
        if self.newline:
            text += "echo this is not really perl\n"
        return text, interpreter if self.target else ""


NIX = ("./nix/store/bwav8kz8b3y471wjsybgzw84mrh4js9-perl-5.28.1/bin",
       " -I/nix/store/x6yyav38jgr924nkna62q3pkp0dgmzlx-perl5.28.1-File-Slurp-9999.25/lib/perl5/site_perl"
       " -I/nix/store/ha8v67sl8dac92r9z07vzr4gv1y9nwqz-perl5.28.1-Net-DBus-1.1.0/lib/perl5/site_perl"
       " -I/nix/store/dcrkvnjmwh69ljsvpbdjjdnqgwx90a9d-perl5.28.1-XML-Parser-2.44/lib/perl5/site_perl"
       " -I/nix/store/rmji88k2zz7h4zg97385bygcydrf2q8h-perl5.28.1-XML-Twig-3.52/lib/perl5/site_perl")
HALF = SIZE // 2

CASES: tuple[Case, ...] = (
    # the 8 the kernel must refuse
    Case("too-big", SIZE + 80, good=False),
    Case("exact", SIZE, good=False),
    Case("exact-space", SIZE, good=False, leading=" "),
    Case("whitespace-too-big", SIZE + 71, good=False, root="", fill=" ", target=""),
    Case("truncated", SIZE + 17, good=False, leading=" " * 19),
    Case("empty", 2, good=False, root="", fill="", target="", newline=""),
    Case("spaces", SIZE - 1, good=False, root="", fill=" ", target="", newline=""),
    Case("newline-prefix", SIZE - 1, good=False, leading="\n", root="", fill=" ", target=""),
    # the 19 it must run
    Case("test.pl", 439, leading=" ", root=NIX[0], arg=NIX[1]),
    Case("one-under", SIZE - 1),
    Case("two-under", SIZE - 2),
    Case("exact-trunc-whitespace", SIZE, arg=" "),
    Case("exact-trunc-arg", SIZE, arg=" f"),
    Case("one-under-full-arg", SIZE - 1, arg=" f"),
    Case("one-under-no-nl", SIZE - 1, newline=""),
    Case("half-under-no-nl", HALF, newline=""),
    Case("one-under-trunc-arg", SIZE - 1, arg=" "),
    Case("one-under-leading", SIZE - 1, leading=" "),
    Case("one-under-leading-trunc-arg", SIZE - 1, leading=" ", arg=" "),
    Case("two-under-no-nl", SIZE - 2, newline=""),
    Case("two-under-trunc-arg", SIZE - 2, arg=" "),
    Case("two-under-leading", SIZE - 2, leading=" "),
    Case("two-under-leading-trunc-arg", SIZE - 2, leading=" ", arg=" "),
    Case("half-two-under-no-nl", HALF, newline=""),  # the selftest reuses the four names above for these
    Case("half-two-under-trunc-arg", HALF, arg=" "),
    Case("half-two-under-leading", HALF, leading=" "),
    Case("half-two-under-lead-trunc-arg", HALF, leading=" ", arg=" "),
)
