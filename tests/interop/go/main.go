// Interop driver for github.com/cloudevents/sdk-go/v2; see ../PROTOCOL.md.
package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/cloudevents/sdk-go/v2/types"
)

type testCase struct {
	ID         string                     `json:"id"`
	Attributes map[string]any             `json:"attributes"`
	Data       map[string]json.RawMessage `json:"data"`
}

func die(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	switch {
	case len(os.Args) == 6 && os.Args[1] == "send":
		send(os.Args[2], os.Args[3], os.Args[4], os.Args[5])
	case len(os.Args) == 3 && os.Args[1] == "receive":
		receive(os.Args[2])
	default:
		die("usage: go-driver send URL binary|structured CASES_FILE ID_PREFIX | go-driver receive OUT_FILE")
	}
}

func send(url, mode, casesFile, prefix string) {
	raw, err := os.ReadFile(casesFile)
	if err != nil {
		die("%v", err)
	}
	var cases []testCase
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // keep integers exact
	if err := dec.Decode(&cases); err != nil {
		die("%s: %v", casesFile, err)
	}

	ctx := cloudevents.ContextWithTarget(context.Background(), url)
	switch mode {
	case "binary":
		ctx = binding.WithForceBinary(ctx)
	case "structured":
		ctx = binding.WithForceStructured(ctx)
	default:
		die("unknown mode %q", mode)
	}
	p, err := cloudevents.NewHTTP()
	if err != nil {
		die("%v", err)
	}
	// NewClient without the WithTimeNow/WithUUIDs defaulters that NewClientHTTP adds,
	// so the event goes out exactly as built.
	c, err := cloudevents.NewClient(p)
	if err != nil {
		die("%v", err)
	}

	for _, tc := range cases {
		e, err := build(tc, prefix)
		if err != nil {
			die("case %s: SDK refused: %v", tc.ID, err)
		}
		// On a non-2xx the SDK's result carries the status code and response body.
		if res := c.Send(ctx, e); !cloudevents.IsACK(res) {
			die("case %s: %v", tc.ID, res)
		}
	}
}

// The SDK's setters record invalid values on the event; Send's validation reports them.
func build(tc testCase, prefix string) (cloudevents.Event, error) {
	e := cloudevents.NewEvent() // specversion 1.0
	e.SetID(prefix + tc.ID)
	contentType := ""
	for name, v := range tc.Attributes {
		switch name {
		case "source":
			e.SetSource(v.(string))
		case "type":
			e.SetType(v.(string))
		case "subject":
			e.SetSubject(v.(string))
		case "dataschema":
			e.SetDataSchema(v.(string))
		case "datacontenttype":
			contentType = v.(string)
			e.SetDataContentType(contentType)
		case "time":
			t, err := time.Parse(time.RFC3339Nano, v.(string))
			if err != nil {
				return e, err
			}
			e.SetTime(t)
		default:
			switch v := v.(type) {
			case string:
				e.SetExtension(name, v)
			case bool:
				e.SetExtension(name, v)
			case json.Number:
				n, err := strconv.ParseInt(string(v), 10, 32)
				if err != nil {
					return e, fmt.Errorf("%s: %w", name, err)
				}
				e.SetExtension(name, int32(n))
			default:
				return e, fmt.Errorf("%s: unsupported value %v", name, v)
			}
		}
	}

	for kind, raw := range tc.Data {
		var value any
		switch kind {
		case "json":
			var v any
			if err := json.Unmarshal(raw, &v); err != nil {
				return e, err
			}
			value = v
		case "text":
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return e, err
			}
			// As bytes: given a Go string, SetData marshals it for the content type (an XML
			// document becomes <string>…</string>); text a program already holds goes as []byte.
			value = []byte(s)
		case "bytes":
			var b []byte // encoding/json decodes base64 into []byte
			if err := json.Unmarshal(raw, &b); err != nil {
				return e, err
			}
			value = b
		default:
			return e, fmt.Errorf("unknown data kind %q", kind)
		}
		if err := e.SetData(contentType, value); err != nil {
			return e, err
		}
	}
	return e, nil
}

func receive(outFile string) {
	out, err := os.OpenFile(outFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		die("%v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		die("%v", err)
	}
	fmt.Printf("listening %d\n", ln.Addr().(*net.TCPAddr).Port) // os.Stdout is unbuffered

	var mu sync.Mutex
	handler := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		line := map[string]any{"path": req.URL.Path}
		if e, err := cehttp.NewEventFromHTTPRequest(req); err != nil {
			line["error"] = err.Error()
		} else {
			line["attributes"], line["data"] = report(e)
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(line); err != nil {
			die("encode: %v", err)
		}
		mu.Lock()
		_, err := out.Write(buf.Bytes()) // one unbuffered write per line
		mu.Unlock()
		if err != nil {
			die("write: %v", err)
		}
		w.WriteHeader(http.StatusOK)
	})
	die("%v", http.Serve(ln, handler))
}

// report returns the attributes and data exactly as the SDK's event holds them.
func report(e *cloudevents.Event) (map[string]any, any) {
	attrs := map[string]any{"specversion": e.SpecVersion()}
	// AsV1 is a no-op for a 1.0 event; its pointer fields tell "unset" from "empty".
	ec := e.Context.AsV1()
	attrs["id"] = ec.ID
	attrs["source"] = ec.Source.String()
	attrs["type"] = ec.Type
	if ec.Subject != nil {
		attrs["subject"] = *ec.Subject
	}
	if ec.Time != nil {
		attrs["time"] = ec.Time.Time.Format(time.RFC3339Nano)
	}
	if ec.DataContentType != nil {
		attrs["datacontenttype"] = *ec.DataContentType
	}
	if ec.DataSchema != nil {
		attrs["dataschema"] = ec.DataSchema.String()
	}
	for name, v := range e.Extensions() {
		attrs[name] = extensionValue(v)
	}

	var data any // JSON null when the event has no data
	if d := e.Data(); d != nil {
		data = map[string]string{"bytes": base64.StdEncoding.EncodeToString(d)}
	}
	return attrs, data
}

func extensionValue(v any) any {
	switch v := v.(type) {
	case int32, bool, string:
		return v
	case time.Time:
		return v.Format(time.RFC3339Nano)
	case types.Timestamp:
		return v.Time.Format(time.RFC3339Nano)
	case *types.Timestamp:
		return v.Time.Format(time.RFC3339Nano)
	default:
		if s, err := types.Format(v); err == nil {
			return s
		}
		return fmt.Sprint(v)
	}
}
