// Package mlog is kvinject's minimal stand-in for the monis.app/mlog logging module,
// used when tests/node/build.sh builds the Secrets Store CSI driver (a test peer) and the
// Go module proxy reachable here cannot serve monis.app/mlog (403 for every version).
//
// It is tests/e2e/azwi-mlog-shim (the Azure Workload Identity webhook's subset) plus what
// the driver's cmd/secrets-store-csi-driver uses: FormatText and
// ValidateAndSetKlogLevelAndFormatGlobally. It logs JSON lines via logr's funcr sink; the
// driver itself logs through klog, which this stand-in leaves alone.
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
	FormatText LogFormat = "text"
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
	case "", FormatJSON, FormatText, FormatCLI:
	default:
		return fmt.Errorf("invalid log format %q", string(spec.Format))
	}
	verbosity.Store(v)
	return nil
}

// ValidateAndSetKlogLevelAndFormatGlobally applies a klog verbosity (the real module takes a
// klog.Level; any integer type with int32 underneath is accepted here, so the stand-in needs
// no klog dependency) mapped as monis.app/mlog maps it: >= 108 all, >= 6 trace, >= 4 debug,
// >= 2 info, below that warnings and errors only.
func ValidateAndSetKlogLevelAndFormatGlobally[L ~int32](ctx context.Context, klogLevel L, format LogFormat) error {
	level := LevelWarning
	switch v := int32(klogLevel); {
	case v >= 108:
		level = LevelAll
	case v >= 6:
		level = LevelTrace
	case v >= 4:
		level = LevelDebug
	case v >= 2:
		level = LevelInfo
	}
	return ValidateAndSetLogLevelAndFormatGlobally(ctx, LogSpec{Level: level, Format: format})
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
