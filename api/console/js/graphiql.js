// GraphiQL on this API, from the embedded bundle. When the console holds a
// session in this tab, its token goes with every request, so a speaker can
// explore with their own rights without pasting it again.
import { currentSession } from './session.js';

const session = currentSession();
const auth = session ? { Authorization: `Bearer ${session.token}` } : {};
const wsScheme = location.protocol === 'https:' ? 'wss:' : 'ws:';

document.body.style.margin = '0';
const root = document.getElementById('graphiql');
root.style.height = '100vh';

const TYPE_REF_DEPTH = 6;
const typeRef = Array.from({ length: TYPE_REF_DEPTH }).reduce((inner) => `kind name ofType { ${inner} }`, 'kind name');

// The API refuses queries nested deeper than 12 levels, and GraphiQL's
// own introspection query nests type references deeper than that. This
// one reads the same schema with six levels of `ofType`, enough for any
// type this API has (`[T!]!` needs three).
const INTROSPECTION = `query IntrospectionQuery {
  __schema {
    description
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description specifiedByURL
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type { ${typeRef} }`;

const send = GraphiQL.createFetcher({
  url: '/graphql',
  subscriptionUrl: `${wsScheme}//${location.host}/graphql`,
  headers: auth,
  wsConnectionParams: auth,
});
const fetcher = (params, options) => (params.operationName === 'IntrospectionQuery'
  ? send({ ...params, query: INTROSPECTION }, options)
  : send(params, options));

ReactDOM.createRoot(root).render(
  React.createElement(GraphiQL, {
    fetcher,
    defaultEditorToolsVisibility: true,
    defaultQuery: '# Signed in through /console/? Your token is sent with every request.\n# Otherwise add {"Authorization": "Bearer <token>"} under Headers.\n{\n  me { sub role namespaces }\n}\n',
  }),
);
