// gitops-health judges Kubernetes objects the way GitOps tools do, with their own
// engines: sigs.k8s.io/cli-utils kstatus (what Flux and kpt compute) and an Argo
// CD resource health script run by gopher-lua, the Lua engine Argo CD embeds,
// with only the libraries Argo CD opens (package, base, table).
//
// Usage: gitops-health HEALTH_LUA < object.json
// Prints one JSON line: {"kstatus": ..., "kstatusMessage": ..., "argo": ..., "argoMessage": ...}.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	if len(os.Args) != 2 {
		fail("usage: gitops-health HEALTH_LUA < object.json")
	}
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading the object: " + err.Error())
	}
	// As the API machinery decodes objects: whole numbers as int64.
	object := &unstructured.Unstructured{}
	if err := object.UnmarshalJSON(data); err != nil {
		fail("decoding the object: " + err.Error())
	}
	kstatus, err := status.Compute(object)
	if err != nil {
		fail("kstatus: " + err.Error())
	}
	argo, argoMessage := argoHealth(os.Args[1], object.Object)
	out, _ := json.Marshal(map[string]string{
		"kstatus":        kstatus.Status.String(),
		"kstatusMessage": kstatus.Message,
		"argo":           argo,
		"argoMessage":    argoMessage,
	})
	fmt.Println(string(out))
}

// argoHealth runs the script as Argo CD does: `obj` is the object, the script
// returns a table with `status` and `message`.
func argoHealth(script string, object map[string]interface{}) (string, string) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		l.Push(l.NewFunction(lib.open))
		l.Push(lua.LString(lib.name))
		l.Call(1, 0)
	}
	l.SetGlobal("obj", toLua(l, object))
	if err := l.DoFile(script); err != nil {
		fail("health script: " + err.Error())
	}
	result, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		fail("health script: did not return a table")
	}
	return lua.LVAsString(result.RawGetString("status")), lua.LVAsString(result.RawGetString("message"))
}

// toLua turns decoded JSON into Lua values: objects and arrays become tables
// (arrays from index 1), numbers become Lua numbers.
func toLua(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case map[string]interface{}:
		table := l.NewTable()
		for key, item := range v {
			table.RawSetString(key, toLua(l, item))
		}
		return table
	case []interface{}:
		table := l.NewTable()
		for _, item := range v {
			table.Append(toLua(l, item))
		}
		return table
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case bool:
		return lua.LBool(v)
	default:
		return lua.LNil
	}
}

func fail(message string) {
	fmt.Fprintln(os.Stderr, message)
	os.Exit(2)
}
