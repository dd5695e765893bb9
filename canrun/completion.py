"""``canrun completion bash|zsh|fish``: shell completion scripts written from the parser itself.

The scripts are generated from ``cli.build_parser()`` at the time they are
printed, so a new flag is completed without anyone editing a script: each
shell gets the subcommands, each subcommand's options, and the choices of the
options that have them (``--format``, ``--runtime``, ``--mode``).
"""

from __future__ import annotations

import argparse
import shlex


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse offers no public accessor for subparsers
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help or a.dest for a in action._choices_actions}
    return {}


def _options(parser: argparse.ArgumentParser) -> list[tuple[str, list[str]]]:
    """Every option string of ``parser`` with its choices (empty when it takes free text or nothing)."""
    out: list[tuple[str, list[str]]] = []
    for action in parser._actions:
        choices = [str(c) for c in action.choices] if action.choices and not isinstance(
            action, argparse._SubParsersAction) else []
        for name in action.option_strings:
            out.append((name, choices))
    return out


def _bash(parser: argparse.ArgumentParser) -> str:
    commands = _commands(parser)
    cases = []
    for name, sub in commands.items():
        opts = " ".join(o for o, _ in _options(sub))
        choice_cases = "".join(f"            {shlex.quote(o)}) COMPREPLY=($(compgen -W {shlex.quote(' '.join(c))} "
                               f"-- \"$cur\")); return;;\n" for o, c in _options(sub) if c)
        positional = " ".join(str(c) for a in sub._actions if not a.option_strings and a.choices
                              for c in a.choices)
        cases.append(f"        {name})\n          case \"$prev\" in\n{choice_cases}          esac\n"
                     f"          COMPREPLY=($(compgen -W {shlex.quote(opts + ' ' + positional)} -- \"$cur\"))\n"
                     f"          [[ $cur != -* && -z $positional_done ]] && COMPREPLY+=($(compgen -f -- \"$cur\"))\n"
                     f"          ;;\n")
    return ("# bash completion for canrun: eval \"$(canrun completion bash)\"\n"
            "_canrun() {\n"
            "  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cmd='' positional_done=''\n"
            "  local w; for w in \"${COMP_WORDS[@]:1:COMP_CWORD-1}\"; do [[ $w != -* ]] && { cmd=$w; break; }; done\n"
            f"  if [[ -z $cmd ]]; then COMPREPLY=($(compgen -W {shlex.quote(' '.join([*commands, '--help', '--version']))}"
            " -- \"$cur\")); return; fi\n"
            "  case \"$cmd\" in\n" + "".join(cases) + "  esac\n}\ncomplete -o default -F _canrun canrun\n")


def _zsh(parser: argparse.ArgumentParser) -> str:
    commands, helps = _commands(parser), _helps(parser)
    lines = ["#compdef canrun", "# zsh completion for canrun: canrun completion zsh > \"${fpath[1]}/_canrun\"",
             "_canrun() {", "  local -a commands", "  commands=("]
    for name, sub in commands.items():
        lines.append(f"    {shlex.quote(name + ':' + helps.get(name, name).replace(':', ' '))}")
    lines += ["  )", "  if (( CURRENT == 2 )); then _describe command commands; return; fi",
              "  case ${words[2]} in"]
    for name, sub in commands.items():
        specs = []
        for option, choices in _options(sub):
            spec = f"{option}[{option}]" + (f":value:({' '.join(choices)})" if choices else "")
            specs.append(shlex.quote(spec))
        lines.append(f"    {name}) _arguments {' '.join(specs)} '*:file:_files' ;;")
    lines += ["  esac", "}", "compdef _canrun canrun", ""]
    return "\n".join(lines)


def _fish(parser: argparse.ArgumentParser) -> str:
    commands, helps = _commands(parser), _helps(parser)
    names = " ".join(commands)
    lines = ["# fish completion for canrun: canrun completion fish > ~/.config/fish/completions/canrun.fish",
             "complete -c canrun -f"]
    for name, sub in commands.items():
        lines.append(f"complete -c canrun -n 'not __fish_seen_subcommand_from {names}' -a {name} "
                     f"-d {shlex.quote(helps.get(name, name))}")
        for option, choices in _options(sub):
            flag = f"-l {option[2:]}" if option.startswith("--") else f"-s {option[1:]}"
            extra = f" -xa {shlex.quote(' '.join(choices))}" if choices else ""
            lines.append(f"complete -c canrun -n '__fish_seen_subcommand_from {name}' {flag}{extra}")
        if name in ("check",):
            lines.append(f"complete -c canrun -n '__fish_seen_subcommand_from {name}' -F")
    return "\n".join(lines) + "\n"


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    return {"bash": _bash, "zsh": _zsh, "fish": _fish}[shell](parser)
