// Package mlog is kvinject's minimal stand-in for the monis.app/mlog logging module,
// used only when tests/e2e/build_binaries.sh builds the Azure Workload Identity webhook
// (a test peer) and the Go module proxy reachable here cannot serve monis.app/mlog.
//
// It implements just the API surface the webhook's main and pkg/webhook packages
// use, on top of logr's funcr JSON sink. Logging behaviour is irrelevant to what the
// e2e tests compare (the admission responses), so this is deliberately simple.
package mlog

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
)

// LogLevel is one of "" (warnings and errors only), info, debug, trace, all.
type LogLevel string

const (
	LevelWarning LogLevel = ""
	LevelInfo    LogLevel = "info"
	LevelDebug   LogLevel = "debug"
	LevelTrace   LogLevel = "trace"
	LevelAll     LogLevel = "all"
)

// LogFormat selects the output encoding; this stand-in always writes JSON lines.
type LogFormat string

const (
	FormatJSON LogFormat = "json"
	FormatCLI  LogFormat = "cli"
)

// LogSpec is the global logging configuration.
type LogSpec struct {
	Level  LogLevel  `json:"level,omitempty"`
	Format LogFormat `json:"format,omitempty"`
}

var verbosity atomic.Int32 // 0 warning, 2 info, 4 debug, 6 trace, 108 all

func levelVerbosity(l LogLevel) (int32, error) {
	switch l {
	case LevelWarning:
		return 0, nil
	case LevelInfo:
		return 2, nil
	case LevelDebug:
		return 4, nil
	case LevelTrace:
		return 6, nil
	case LevelAll:
		return 108, nil
	}
	return 0, fmt.Errorf("invalid log level %q: want one of \"\", info, debug, trace, all", string(l))
}

// ValidateAndSetLogLevelAndFormatGlobally applies spec to every logger.
func ValidateAndSetLogLevelAndFormatGlobally(_ context.Context, spec LogSpec) error {
	v, err := levelVerbosity(spec.Level)
	if err != nil {
		return err
	}
	switch spec.Format {
	case "", FormatJSON, FormatCLI:
	default:
		return fmt.Errorf("invalid log format %q", string(spec.Format))
	}
	verbosity.Store(v)
	return nil
}

// Enabled reports whether messages at level would be written.
func Enabled(level LogLevel) bool {
	v, err := levelVerbosity(level)
	return err == nil && v <= verbosity.Load()
}

// Setup returns the function to defer at the end of main (nothing to flush here).
func Setup() func() { return func() {} }

func root() logr.Logger {
	// Sink verbosity is read per call so loggers created before the level is set
	// (package-level variables) follow later changes.
	return funcr.NewJSON(func(obj string) { fmt.Fprintln(os.Stderr, obj) },
		funcr.Options{LogTimestamp: true, Verbosity: int(verbosity.Load())})
}

// Logr returns a logr.Logger for libraries such as controller-runtime.
func Logr() logr.Logger { return root() }

// Fatal logs err and exits with status 1.
func Fatal(err error, keysAndValues ...any) {
	root().Error(err, "fatal error", keysAndValues...)
	os.Exit(1)
}

// Logger is a named logger carrying key/value pairs.
type Logger interface {
	Error(msg string, err error, keysAndValues ...any)
	Warning(msg string, keysAndValues ...any)
	Info(msg string, keysAndValues ...any)
	Debug(msg string, keysAndValues ...any)
	Trace(msg string, keysAndValues ...any)
	All(msg string, keysAndValues ...any)
	WithValues(keysAndValues ...any) Logger
	WithName(name string) Logger
}

type logger struct {
	names []string
	kv    []any
}

// New returns the root Logger.
func New() Logger { return logger{} }

func (l logger) build() logr.Logger {
	r := root()
	for _, n := range l.names {
		r = r.WithName(n)
	}
	if len(l.kv) > 0 {
		r = r.WithValues(l.kv...)
	}
	return r
}

func (l logger) Error(msg string, err error, kv ...any) { l.build().Error(err, msg, kv...) }
func (l logger) Warning(msg string, kv ...any) {
	l.build().Info(msg, append([]any{"warning", true}, kv...)...)
}
func (l logger) Info(msg string, kv ...any)  { l.build().Info(msg, kv...) }
func (l logger) Debug(msg string, kv ...any) { l.build().V(4).Info(msg, kv...) }
func (l logger) Trace(msg string, kv ...any) { l.build().V(6).Info(msg, kv...) }
func (l logger) All(msg string, kv ...any)   { l.build().V(108).Info(msg, kv...) }

func (l logger) WithValues(kv ...any) Logger {
	return logger{names: l.names, kv: append(append([]any{}, l.kv...), kv...)}
}

func (l logger) WithName(name string) Logger {
	return logger{names: append(append([]string{}, l.names...), name), kv: l.kv}
}

// Package-level helpers on the root logger.
func Error(msg string, err error, kv ...any) { New().Error(msg, err, kv...) }
func Warning(msg string, kv ...any)          { New().Warning(msg, kv...) }
func Info(msg string, kv ...any)             { New().Info(msg, kv...) }
func Debug(msg string, kv ...any)            { New().Debug(msg, kv...) }
func Trace(msg string, kv ...any)            { New().Trace(msg, kv...) }
func WithValues(kv ...any) Logger            { return New().WithValues(kv...) }
func WithName(name string) Logger            { return New().WithName(name) }
