package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// outputs are the files a Run writes once it is over (Config.HDRFile,
// SeriesFile and PlotFile), created before anything is sent so that a
// path that cannot be written fails the run before it costs anything.
type outputs struct {
	hdr, serviceHDR, series, plot *os.File // nil when not asked for.
}

// serviceHDRPath is where the service times go beside the HDR file path:
// ".service" before its extension.
func serviceHDRPath(path string) string {
	ext := filepath.Ext(path)
	return strings.TrimSuffix(path, ext) + ".service" + ext
}

// createOutputs creates the files cfg asks for; on an error it removes
// the ones it created.
func createOutputs(cfg Config) (*outputs, error) {
	o := &outputs{}
	var servicePath string
	if cfg.HDRFile != "" && cfg.Rate > 0 {
		servicePath = serviceHDRPath(cfg.HDRFile)
	}
	for _, f := range []struct {
		dst  **os.File
		path string
	}{
		{&o.hdr, cfg.HDRFile},
		{&o.serviceHDR, servicePath},
		{&o.series, cfg.SeriesFile},
		{&o.plot, cfg.PlotFile},
	} {
		if f.path == "" {
			continue
		}
		file, err := os.Create(f.path)
		if err != nil {
			o.close(true)
			return nil, fmt.Errorf("bench: %w", err)
		}
		*f.dst = file
	}
	return o, nil
}

// write writes rep into the files and closes them; it returns what
// failed, for the report's problems.
func (o *outputs) write(rep *Report) []string {
	var problems []string
	for _, f := range []struct {
		file  *os.File
		write func(*os.File) error
	}{
		{o.hdr, func(f *os.File) error { return rep.WriteHDR(f) }},
		{o.serviceHDR, func(f *os.File) error { return rep.WriteServiceHDR(f) }},
		{o.series, func(f *os.File) error { return WriteSeries(f, rep.Series) }},
		{o.plot, func(f *os.File) error { return rep.WritePlot(f) }},
	} {
		if f.file == nil {
			continue
		}
		if err := errors.Join(f.write(f.file), f.file.Close()); err != nil {
			problems = append(problems, fmt.Sprintf("writing %s: %v", f.file.Name(), err))
		}
	}
	return problems
}

// close closes the files without writing them, and removes them if
// remove is set.
func (o *outputs) close(remove bool) {
	for _, f := range []*os.File{o.hdr, o.serviceHDR, o.series, o.plot} {
		if f == nil {
			continue
		}
		f.Close()
		if remove {
			os.Remove(f.Name())
		}
	}
}
