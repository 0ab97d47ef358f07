// Command protoc compiles .proto files and runs protoc plugins on them, like
// protoc does, for the few things `make proto` needs. It exists so that the
// generated gRPC code is reproducible from the Go module proxy alone: Debian's
// protoc is not on every machine, and its version is written into the
// generated files, so a different protoc turned `make verify-generated` red.
// The compiler is github.com/bufbuild/protocompile at the version this module
// pins; the generated headers say "protoc (unknown)".
//
//	protoc -I . -plugin go=bin/protoc-gen-go -plugin go-grpc=bin/protoc-gen-go-grpc \
//	  -opt paths=source_relative -out . pkg/meshapi/v1/meshapi.proto
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/bufbuild/protocompile"
	"github.com/bufbuild/protocompile/linker"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var includes, plugins listFlag
	flag.Var(&includes, "I", "import path (repeatable; default .)")
	flag.Var(&plugins, "plugin", "name=path of a protoc plugin to run (repeatable)")
	opt := flag.String("opt", "", "parameter passed to every plugin")
	out := flag.String("out", ".", "directory the plugins' files are written under")
	flag.Parse()
	if err := run(includes, plugins, *opt, *out, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "protoc:", err)
		os.Exit(1)
	}
}

func run(includes, plugins []string, opt, out string, files []string) error {
	if len(files) == 0 || len(plugins) == 0 {
		return errors.New("need at least one -plugin and one .proto file")
	}
	if len(includes) == 0 {
		includes = []string{"."}
	}
	compiler := protocompile.Compiler{
		Resolver:       protocompile.WithStandardImports(&protocompile.SourceResolver{ImportPaths: includes}),
		SourceInfoMode: protocompile.SourceInfoStandard,
	}
	compiled, err := compiler.Compile(context.Background(), files...)
	if err != nil {
		return err
	}
	req := &pluginpb.CodeGeneratorRequest{FileToGenerate: files}
	if opt != "" {
		req.Parameter = proto.String(opt)
	}
	seen := map[string]bool{}
	for _, f := range compiled {
		req.ProtoFile = appendWithImports(req.ProtoFile, f, seen)
	}
	for _, p := range plugins {
		name, path, ok := strings.Cut(p, "=")
		if !ok {
			return fmt.Errorf("-plugin %q: want name=path", p)
		}
		if err := runPlugin(name, path, req, out); err != nil {
			return err
		}
	}
	return nil
}

// appendWithImports adds f after everything it imports, once each: plugins
// expect the files in dependency order.
func appendWithImports(list []*descriptorpb.FileDescriptorProto, f protoreflect.FileDescriptor, seen map[string]bool) []*descriptorpb.FileDescriptorProto {
	if seen[f.Path()] {
		return list
	}
	seen[f.Path()] = true
	imports := f.Imports()
	for i := 0; i < imports.Len(); i++ {
		list = appendWithImports(list, imports.Get(i).FileDescriptor, seen)
	}
	if r, ok := f.(linker.Result); ok {
		return append(list, r.FileDescriptorProto())
	}
	return append(list, protodesc.ToFileDescriptorProto(f))
}

func runPlugin(name, path string, req *pluginpb.CodeGeneratorRequest, out string) error {
	in, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(path)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(in), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("plugin %s (%s): %v: %s", name, path, err, stderr.String())
	}
	var resp pluginpb.CodeGeneratorResponse
	if err := proto.Unmarshal(stdout.Bytes(), &resp); err != nil {
		return fmt.Errorf("plugin %s: reading its response: %w", name, err)
	}
	if resp.Error != nil {
		return fmt.Errorf("plugin %s: %s", name, resp.GetError())
	}
	for _, f := range resp.File {
		if f.GetInsertionPoint() != "" {
			return fmt.Errorf("plugin %s: insertion points are not supported (%s)", name, f.GetName())
		}
		dst := filepath.Join(out, filepath.FromSlash(f.GetName()))
		if rel, err := filepath.Rel(out, dst); err != nil || strings.HasPrefix(rel, "..") {
			return fmt.Errorf("plugin %s: refusing to write outside %s: %s", name, out, f.GetName())
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, []byte(f.GetContent()), 0o644); err != nil {
			return err
		}
	}
	return nil
}
