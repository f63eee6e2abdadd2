// Command tollgate is the metering LLM gateway: one binary with the
// subcommands proxy, billing, dev and admin. main only wires: it parses flags,
// loads the configuration and starts the packages that do the work.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// SIGHUP (systemctl reload, logrotate) must not end the process: by
	// default it would, without draining, leaving the last charges
	// unapplied and the credit leases held until they expire. proxy and
	// billing reload their configuration on it (reload.go); here it is only
	// kept from ending the process, also before they watch for it.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
		}
	}()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	signal.Stop(hup)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "tollgate:", err)
		os.Exit(1)
	}
}

const usage = `usage: tollgate <command> [flags]

commands:
  proxy     run the metering proxy (OpenAI-compatible API)
  billing   run the billing sidecar and admin API
  dev       run proxy + billing in one process with an embedded Redis and mock providers
  admin     manage accounts, keys and credits directly in Redis; reconcile and restore the books
  migrate   create or update the durable books' schema in PostgreSQL (DATABASE_URL)
  version   print the version, commit and build date (also --version)

Run 'tollgate <command> -h' for a command's flags and the environment
variables it reads.
`

// run is the whole program, callable from tests.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "proxy":
		return runProxy(ctx, args[1:], stdout, stderr)
	case "billing":
		return runBilling(ctx, args[1:], stdout, stderr)
	case "dev":
		return runDev(ctx, args[1:], stdout, stderr)
	case "admin":
		return runAdmin(ctx, args[1:], stdout, stderr)
	case "migrate":
		return runMigrate(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	case "version", "--version", "-version":
		printVersion(stdout)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}
