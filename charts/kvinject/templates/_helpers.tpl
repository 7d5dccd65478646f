{{/* Labels every object carries: the kustomize base's two, Helm's own, then commonLabels. */}}
{{- define "kvinject.labels" -}}
app.kubernetes.io/name: kvinject
app.kubernetes.io/part-of: kvinject
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The pods' selector: only the name, as in the kustomize base (a selector cannot change later). */}}
{{- define "kvinject.selectorLabels" -}}
app.kubernetes.io/name: kvinject
{{- end }}

{{/* registry/repository[:tag|@digest] */}}
{{- define "kvinject.imageRef" -}}
{{- $img := index . 0 -}}{{- $repo := index . 1 -}}{{- $digest := index . 2 -}}{{- $ctx := index . 3 -}}
{{- $name := $repo -}}
{{- if $img.registry }}{{ $name = printf "%s/%s" $img.registry $repo }}{{ end -}}
{{- if $digest -}}
{{- printf "%s@%s" $name $digest -}}
{{- else -}}
{{- printf "%s:%s" $name (default $ctx.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end }}

{{- define "kvinject.image" -}}
{{- include "kvinject.imageRef" (list .Values.image .Values.image.repository .Values.image.digest .) -}}
{{- end }}

{{- define "kvinject.fetchImage" -}}
{{- include "kvinject.imageRef" (list .Values.image .Values.image.fetchRepository .Values.image.fetchDigest .) -}}
{{- end }}

{{/* The ServiceAccount's user name (the admission policies match on it). */}}
{{- define "kvinject.serviceAccountUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:kvinject
{{- end }}

{{/* The caBundle / cainjector part of a webhook configuration's metadata. */}}
{{- define "kvinject.webhookAnnotations" -}}
{{- if eq .Values.certificates.mode "cert-manager" }}
annotations:
  cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/kvinject-ca
{{- end }}
{{- end }}

{{/* A webhook's clientConfig. */}}
{{- define "kvinject.clientConfig" -}}
{{- $ctx := index . 0 -}}{{- $path := index . 1 -}}
clientConfig:
  service:
    name: kvinject
    namespace: {{ $ctx.Release.Namespace }}
    path: {{ $path }}
    port: 443
  {{- if eq $ctx.Values.certificates.mode "secret" }}
  caBundle: {{ $ctx.Values.certificates.caBundle }}
  {{- end }}
{{- end }}

{{/* The namespaces no webhook is sent: the configured ones and the release namespace. */}}
{{- define "kvinject.namespaceSelector" -}}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values: {{ append (.Values.webhook.excludedNamespaces | default list) .Release.Namespace | uniq | toJson }}
{{- end }}
