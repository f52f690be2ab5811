// Naming rules the linter's own rules leave out: it checks only that
// object and interface names start with a capital, and does not look at
// arguments. Loaded by scripts/check-schema.sh with --custom-rule-paths.
'use strict';

const { ValidationError } = require('graphql-schema-linter/lib/validation_error');

const PASCAL_CASE = /^[A-Z][a-zA-Z0-9]*$/;
const CAMEL_CASE = /^[a-z][a-zA-Z0-9]*$/;

function typeRule(kind) {
  return (node) => {
    const name = node.name.value;
    if (!PASCAL_CASE.test(name)) {
      return new ValidationError(
        'types-are-pascal-cased',
        `The ${kind} \`${name}\` is not PascalCase.`,
        [node.name],
      );
    }
    return null;
  };
}

// Every named type: objects, interfaces, unions, enums, inputs, scalars.
function TypesArePascalCased(context) {
  const check = (kind) => {
    const rule = typeRule(kind);
    return (node) => {
      const error = rule(node);
      if (error) {
        context.reportError(error);
      }
    };
  };
  return {
    ObjectTypeDefinition: check('object type'),
    InterfaceTypeDefinition: check('interface type'),
    UnionTypeDefinition: check('union type'),
    EnumTypeDefinition: check('enum type'),
    InputObjectTypeDefinition: check('input object type'),
    ScalarTypeDefinition: check('scalar type'),
  };
}

// Arguments of fields and directives.
function ArgumentsAreCamelCased(context) {
  return {
    InputValueDefinition(node, key, parent, path, ancestors) {
      const owner = ancestors[ancestors.length - 1];
      if (owner.kind !== 'FieldDefinition' && owner.kind !== 'DirectiveDefinition') {
        return;
      }
      const name = node.name.value;
      if (!CAMEL_CASE.test(name)) {
        context.reportError(
          new ValidationError(
            'arguments-are-camel-cased',
            `The argument \`${owner.name.value}(${name}:)\` is not camelCase.`,
            [node],
          ),
        );
      }
    },
  };
}

module.exports = { TypesArePascalCased, ArgumentsAreCamelCased };
