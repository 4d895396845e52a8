# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_hoardcc_global_optspecs
    string join \n inetd show-hosts h/help V/version
end

function __fish_hoardcc_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_hoardcc_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_hoardcc_using_subcommand
    set -l cmd (__fish_hoardcc_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c hoardcc -n "__fish_hoardcc_needs_command" -l inetd -d 'Serve one connection on stdin/stdout (same as `hoardcc serve`), for exec and forced-command setups'
complete -c hoardcc -n "__fish_hoardcc_needs_command" -l show-hosts -d 'Show hosts, connections, lanes and jobs of the running mux (same as `hoardcc status`)'
complete -c hoardcc -n "__fish_hoardcc_needs_command" -s h -l help -d 'Print help'
complete -c hoardcc -n "__fish_hoardcc_needs_command" -s V -l version -d 'Print version'
complete -c hoardcc -n "__fish_hoardcc_needs_command" -f -a "serve" -d 'The server: speak hoardcc\'s protocol (or one stock distcc job) on stdin/stdout. sshd runs it from `Subsystem hoardcc /usr/bin/hoardcc serve`'
complete -c hoardcc -n "__fish_hoardcc_needs_command" -f -a "hosts" -d 'Print the host list hoardcc would use, and where it came from'
complete -c hoardcc -n "__fish_hoardcc_needs_command" -f -a "mux" -d 'The per-user daemon that hoards ssh connections and schedules jobs. Wrappers start it on first use; it exits after being idle (10 minutes by default)'
complete -c hoardcc -n "__fish_hoardcc_needs_command" -f -a "status" -d 'Show hosts, connections, lanes, running and queued jobs, per-host counters and backoff'
complete -c hoardcc -n "__fish_hoardcc_needs_command" -f -a "mon" -d 'Watch the running mux live: hosts (slots, connections, lanes, backoff, BUSY and cache counts), each job\'s state, host, elapsed time and bytes, recent failures'
complete -c hoardcc -n "__fish_hoardcc_needs_command" -f -a "stats" -d 'Counters kept across mux restarts: jobs remote, local, fallen back and from cache, per host; bytes; remote compile time against the estimated local time'
complete -c hoardcc -n "__fish_hoardcc_needs_command" -f -a "ping" -d 'Reach each host (all of the host list, or those named) and report one line per host: route, server version, slots and load, round trip. Exit 0 only if every host is usable'
complete -c hoardcc -n "__fish_hoardcc_needs_command" -f -a "doctor" -d 'Check a host step by step (ssh config, DNS, TCP, host key, authentication, route, server version, a real compile), each with ✓ or ✗ and a fix'
complete -c hoardcc -n "__fish_hoardcc_needs_command" -f -a "install-server" -d 'Copy this binary to ~/.local/bin/hoardcc on a build server over ssh (no root, no scp), check that it runs and what it offers, and print the host entry to use'
complete -c hoardcc -n "__fish_hoardcc_needs_command" -f -a "masquerade" -d 'Make DIR a masquerade directory: symlinks named after the compilers on PATH (gcc, g++, cc, c++, clang, clang++, gcc-N …) pointing to hoardcc; prints the PATH line'
complete -c hoardcc -n "__fish_hoardcc_needs_command" -f -a "completions" -d 'Print a shell completion script for hoardcc'
complete -c hoardcc -n "__fish_hoardcc_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand serve" -l inetd -d 'Accepted for symmetry with `distccd --inetd`; serving stdin/stdout is the only mode'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand serve" -l check -d 'Do not serve: check the config, sandbox, job and slot directories, and list the compilers this server offers (name, path, version, target). Exit 0 when usable'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand serve" -l json -d 'With --check: print the report as JSON'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand serve" -s h -l help -d 'Print help'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand hosts" -s h -l help -d 'Print help'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand mux" -l foreground -d 'Stay in the foreground (for a systemd user unit)'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand mux" -l stop -d 'Stop the running mux and wait until it has exited'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand mux" -s h -l help -d 'Print help'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand status" -l json -d 'Print JSON instead of a table'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand status" -s h -l help -d 'Print help'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand mon" -l once -d 'Print one plain-text frame and exit (for scripts; no terminal needed)'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand mon" -s h -l help -d 'Print help'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand stats" -l json -d 'Print JSON instead of text'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand stats" -l zero -d 'Reset every counter to zero (then print them)'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand stats" -s h -l help -d 'Print help'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand ping" -l timeout -d 'Deadline for each host, in seconds: connect, handshake and round trip together' -r
complete -c hoardcc -n "__fish_hoardcc_using_subcommand ping" -l json -d 'Print the report as JSON'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand ping" -l hosts-ok -d 'Print only the usable host entries, space-separated, ready for HOARDCC_HOSTS'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand ping" -s h -l help -d 'Print help'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand doctor" -s h -l help -d 'Print help'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand install-server" -l key -d 'The compile-only key (a .pub, or a private key); default ~/.ssh/hoardcc-HOST, generated when missing' -r -F
complete -c hoardcc -n "__fish_hoardcc_using_subcommand install-server" -l force -d 'Replace a different hoardcc already installed there'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand install-server" -l forced-command -d 'Instead of a login route, authorise a compile-only key in the server\'s ~/.ssh/authorized_keys (restrict,command="…/hoardcc serve")'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand install-server" -s h -l help -d 'Print help'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand masquerade" -s h -l help -d 'Print help'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand completions" -s h -l help -d 'Print help'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand help; and not __fish_seen_subcommand_from serve hosts mux status mon stats ping doctor install-server masquerade completions help" -f -a "serve" -d 'The server: speak hoardcc\'s protocol (or one stock distcc job) on stdin/stdout. sshd runs it from `Subsystem hoardcc /usr/bin/hoardcc serve`'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand help; and not __fish_seen_subcommand_from serve hosts mux status mon stats ping doctor install-server masquerade completions help" -f -a "hosts" -d 'Print the host list hoardcc would use, and where it came from'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand help; and not __fish_seen_subcommand_from serve hosts mux status mon stats ping doctor install-server masquerade completions help" -f -a "mux" -d 'The per-user daemon that hoards ssh connections and schedules jobs. Wrappers start it on first use; it exits after being idle (10 minutes by default)'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand help; and not __fish_seen_subcommand_from serve hosts mux status mon stats ping doctor install-server masquerade completions help" -f -a "status" -d 'Show hosts, connections, lanes, running and queued jobs, per-host counters and backoff'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand help; and not __fish_seen_subcommand_from serve hosts mux status mon stats ping doctor install-server masquerade completions help" -f -a "mon" -d 'Watch the running mux live: hosts (slots, connections, lanes, backoff, BUSY and cache counts), each job\'s state, host, elapsed time and bytes, recent failures'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand help; and not __fish_seen_subcommand_from serve hosts mux status mon stats ping doctor install-server masquerade completions help" -f -a "stats" -d 'Counters kept across mux restarts: jobs remote, local, fallen back and from cache, per host; bytes; remote compile time against the estimated local time'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand help; and not __fish_seen_subcommand_from serve hosts mux status mon stats ping doctor install-server masquerade completions help" -f -a "ping" -d 'Reach each host (all of the host list, or those named) and report one line per host: route, server version, slots and load, round trip. Exit 0 only if every host is usable'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand help; and not __fish_seen_subcommand_from serve hosts mux status mon stats ping doctor install-server masquerade completions help" -f -a "doctor" -d 'Check a host step by step (ssh config, DNS, TCP, host key, authentication, route, server version, a real compile), each with ✓ or ✗ and a fix'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand help; and not __fish_seen_subcommand_from serve hosts mux status mon stats ping doctor install-server masquerade completions help" -f -a "install-server" -d 'Copy this binary to ~/.local/bin/hoardcc on a build server over ssh (no root, no scp), check that it runs and what it offers, and print the host entry to use'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand help; and not __fish_seen_subcommand_from serve hosts mux status mon stats ping doctor install-server masquerade completions help" -f -a "masquerade" -d 'Make DIR a masquerade directory: symlinks named after the compilers on PATH (gcc, g++, cc, c++, clang, clang++, gcc-N …) pointing to hoardcc; prints the PATH line'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand help; and not __fish_seen_subcommand_from serve hosts mux status mon stats ping doctor install-server masquerade completions help" -f -a "completions" -d 'Print a shell completion script for hoardcc'
complete -c hoardcc -n "__fish_hoardcc_using_subcommand help; and not __fish_seen_subcommand_from serve hosts mux status mon stats ping doctor install-server masquerade completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
