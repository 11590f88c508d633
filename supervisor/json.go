package supervisor

import (
	"encoding/json"
	"fmt"
)

func jsonMarshal(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("supervisor: encode %T: %w", v, err)
	}
	return string(b), nil
}
