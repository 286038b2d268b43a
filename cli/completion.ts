// `dwcp completion bash|zsh`: completion scripts made from the command table (commands.ts).
import { COMMANDS, flagsOf } from "./commands.js";

const words = (list: string[]): string => list.join(" ");

export function bashCompletion(): string {
  const cases = COMMANDS.map((c) => {
    const choices = c.positionals?.flatMap((p) => p.choices ?? []) ?? [];
    return `    ${c.name}) opts="${words(flagsOf(c).map((f) => `--${f.name}`))}" choices="${words(choices)}" ;;`;
  });
  return `# dwcp bash completion: source <(dwcp completion bash)
_dwcp() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" opts="" choices=""
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "${words(COMMANDS.map((c) => c.name))}" -- "$cur"))
    return
  fi
  case "\${COMP_WORDS[1]}" in
${cases.join("\n")}
  esac
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  elif [ "$COMP_CWORD" -eq 2 ] && [ -n "$choices" ]; then
    COMPREPLY=($(compgen -W "$choices" -- "$cur"))
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
complete -o default -F _dwcp dwcp
`;
}

const zshQuote = (s: string): string => s.replaceAll("'", "'\\''").replaceAll("[", "\\[").replaceAll("]", "\\]");

export function zshCompletion(): string {
  const cmds = COMMANDS.map((c) => `    '${c.name}:${zshQuote(c.summary)}'`);
  const cases = COMMANDS.map((c) => {
    const specs = flagsOf(c).map(
      (f) => `'--${f.name}[${zshQuote(f.help)}]${f.value ? `:${f.value.toLowerCase()}:_files` : ""}'`,
    );
    const choices = c.positionals?.flatMap((p) => p.choices ?? []) ?? [];
    const pos = choices.length ? ` '1:${c.positionals?.[0]?.name ?? "arg"}:(${words(choices)})'` : "";
    return `    ${c.name}) _arguments ${specs.join(" ")}${pos} ;;`;
  });
  return `#compdef dwcp
# dwcp zsh completion: dwcp completion zsh > "\${fpath[1]}/_dwcp"
_dwcp() {
  local -a commands
  commands=(
${cmds.join("\n")}
  )
  if (( CURRENT == 2 )); then
    _describe 'command' commands
    return
  fi
  words=(\${words[2,-1]})
  (( CURRENT-- ))
  case "\${words[1]}" in
${cases.join("\n")}
  esac
}
_dwcp "$@"
`;
}
